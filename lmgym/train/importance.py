"""Importance-sampling corrections for tokens sampled by another policy than the one trained.

Two gaps separate the sampler's distribution mu from the trainer's pi_old ("proximal"
policy: the weights at the start of this update): *staleness*, when asynchronous
generation sampled with weights some steps old, and *mismatch*, when the sampler is
another implementation (vLLM kernels, bf16) whose logprobs differ from the trainer's even
for the same weights. The PPO-style losses clip pi_theta / pi_old; these per-token
weights w_t = pi_old / mu, detached, multiply each token's policy term to correct the rest
(decoupled PPO, Hilton et al. 2021, arXiv 2110.00641). Uncapped, w has unbounded
variance, so:

    tis   truncated IS:  w_t = min(pi_old / mu, cap)                       (Yao et al. 2025,
          "Your efficient RL framework secretly brings you off-policy RL training")
    mis   masked IS:     w_t = 1 if 1/cap <= pi_old / mu <= cap, else 0   (tokens the sampler
          and trainer disagree on too much are left out instead of down-weighted)

`mismatch_kl` estimates KL(mu || pi_old) over the sampled tokens with the k3 estimator
(always >= 0): the number to watch when a new sampler back end is plugged in.
Shapes: (B, T) log-probabilities of the sampled tokens and a (B, T) mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass(frozen=True)
class ISOutput:
    weights: Tensor  # (B, T) detached, 0 at masked positions
    capped_fraction: float  # tokens whose weight was truncated (tis) or masked out (mis)
    weight_mean: float


def _log_ratio(proximal: Tensor, sampler: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    m = mask.bool()
    return torch.where(m, proximal.detach().float() - sampler.float(), 0.0), m


def _summary(weights: Tensor, capped: Tensor, m: Tensor) -> ISOutput:
    n = m.sum().clamp(min=1)
    return ISOutput(
        weights=torch.where(m, weights, 0.0),
        capped_fraction=float((capped & m).sum() / n),
        weight_mean=float(torch.where(m, weights, 0.0).sum() / n),
    )


def truncated_is(proximal: Tensor, sampler: Tensor, mask: Tensor, cap: float) -> ISOutput:
    log_ratio, m = _log_ratio(proximal, sampler, mask)
    ratio = log_ratio.exp()
    return _summary(ratio.clamp(max=cap), ratio > cap, m)


def masked_is(proximal: Tensor, sampler: Tensor, mask: Tensor, cap: float) -> ISOutput:
    log_ratio, m = _log_ratio(proximal, sampler, mask)
    outside = log_ratio.abs() > torch.log(torch.tensor(cap))
    return _summary((~outside).float(), outside, m)


IS_CORRECTIONS: dict[str, Callable[[Tensor, Tensor, Tensor, float], ISOutput]] = {"tis": truncated_is, "mis": masked_is}


def mismatch_kl(proximal: Tensor, sampler: Tensor, mask: Tensor) -> float:
    """k3 estimate of KL(mu || pi_old) from tokens drawn by mu: E[exp(d) - d - 1], d = log pi_old - log mu."""
    d, m = _log_ratio(proximal, sampler, mask)
    kl = torch.where(m, d.exp() - d - 1.0, 0.0).sum() / m.sum().clamp(min=1)
    return max(0.0, float(kl))  # >= 0 exactly; float32 rounding can dip below by ~1e-9
