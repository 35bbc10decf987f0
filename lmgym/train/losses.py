"""GRPO-family policy losses: one pure function per variant, all with the same signature.

(Kept in one module of ~400 lines on purpose: the five variants differ in a line or two
each, and reading them side by side, with their papers cited, is how they are checked.)

    loss_fn(logprobs, old_logprobs, advantages, mask, *,
            eps_low, eps_high, ref_logprobs=None, beta=0.0, is_weights=None) -> LossOutput

Two variants take their own option in place of, or besides, the clip range: dr_grpo
needs `length` (its constant T, a setting of the run), and cispo takes `cap` (an
absolute cap on the importance weight) instead of eps_low/eps_high.

Shapes (B completions in the batch, T token positions, padded):

    logprobs      (B, T)  log pi_theta(o_t | q, o_<t) of the sampled tokens, with grad
    old_logprobs  (B, T)  the same tokens under the sampling policy pi_old
    ref_logprobs  (B, T)  the same tokens under a frozen reference policy (KL penalty only)
    advantages    (B,)    one per completion (`lmgym.train.advantages`), shared by its tokens
    mask          (B, T)  1 on completion tokens the model sampled; 0 on prompt, tool
                          output and padding. Bool or 0/1 float.
    is_weights    (B, T)  optional importance weights pi_old / mu against the sampler
                          (`lmgym.train.importance`), multiplying each token's policy term
                          (gspo: their per-sequence mean); None = 1 everywhere.

old_logprobs, ref_logprobs, advantages and is_weights are constants (detached). Every input is
zeroed at masked positions with `torch.where` before any arithmetic, so whatever sits
there (-inf, 1e9, NaN) changes neither the loss nor the gradients, which are exactly 0
there. A completion with no masked-in token drops out entirely (it is not counted in
any "mean over sequences"). Arithmetic is in float32 whatever the input dtype.

The variants differ from vanilla GRPO (DeepSeekMath, arXiv 2402.03300) in three places:
which importance ratio, how it is clipped, and how token terms are averaged.

    variant  ratio               clip (eps_low/eps_high)        aggregation of token terms
    grpo     per token r_t       min(rA, clip(r)A), .2/.2       mean per sequence, then over sequences
    dr_grpo  per token r_t       min(rA, clip(r)A), .2/.2       sum per sequence / T, mean over sequences
    dapo     per token r_t       min(rA, clip(r)A), .2/.28      sum over the batch / its number of tokens
    gspo     per sequence s_i    min(sA, clip(s)A), 3e-4/4e-4   (none: one term per sequence), mean
    cispo    per token r_t       sg(min(r, cap)) A log pi, 5    sum over the batch / its number of tokens

with r_t = pi_theta / pi_old = exp(logprobs - old_logprobs) and clip(x) = clamp(x,
1 - eps_low, 1 + eps_high); dr_grpo's T is a constant of the run, never the batch's
padded width. The loss is minus the objective, so it is minimised.

Optional KL penalty to the reference (GRPO's, DeepSeekMath), with Schulman's k3
estimator, unbiased and always >= 0:

    kl_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1

added as `beta * aggregate(kl)` with the variant's own aggregation of token terms
(gspo, whose policy term has no token terms, uses grpo's per-sequence mean).

Stats in `LossOutput` are floats for logging: `kl` is the mean k3 over masked tokens (0
without a reference), `ratio_mean` the mean importance ratio (per token; per sequence
for gspo), `clip_fraction` the share of tokens (sequences for gspo) where the clip is
active, defined per variant below. `LOSSES` maps names to functions, picked once by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor  # () scalar, to call .backward() on
    clip_fraction: float
    kl: float
    ratio_mean: float


class LossFn(Protocol):
    def __call__(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        advantages: Tensor,
        mask: Tensor,
        *,
        eps_low: float = ...,
        eps_high: float = ...,
        ref_logprobs: Tensor | None = None,
        beta: float = 0.0,
        is_weights: Tensor | None = None,
    ) -> LossOutput: ...


# ---------------------------------------------------------------------------------------
# Shared pieces: input checks, masking, the clipped surrogate, k3 KL, aggregations.


def _check(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_logprobs: Tensor | None,
    beta: float,
) -> None:
    if logprobs.ndim != 2:
        raise ValueError(f"logprobs must have shape (B, T), got {tuple(logprobs.shape)}")
    shape = tuple(logprobs.shape)
    if tuple(old_logprobs.shape) != shape:
        raise ValueError(
            f"old_logprobs must have the shape of logprobs {shape}, got {tuple(old_logprobs.shape)}"
        )
    if tuple(mask.shape) != shape:
        raise ValueError(f"mask must have the shape of logprobs {shape}, got {tuple(mask.shape)}")
    if tuple(advantages.shape) != shape[:1]:
        raise ValueError(f"advantages must have shape (B,) = {shape[:1]}, got {tuple(advantages.shape)}")
    if ref_logprobs is not None and tuple(ref_logprobs.shape) != shape:
        raise ValueError(
            f"ref_logprobs must have the shape of logprobs {shape}, got {tuple(ref_logprobs.shape)}"
        )
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError(f"beta={beta} needs ref_logprobs for the KL penalty")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must hold only 0 and 1")


def _prepare(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    ref_logprobs: Tensor | None,
    beta: float,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]:
    """Check shapes, zero every masked position, upcast to float32, detach the constants.

    Returns (logp (B, T), old (B, T), ref (B, T) or None, adv (B,), m bool (B, T)).
    """
    _check(logprobs, old_logprobs, advantages, mask, ref_logprobs, beta)
    m = mask.bool()  # (B, T)
    logp = torch.where(m, logprobs.float(), 0.0)  # (B, T), grad is 0 at masked positions
    old = torch.where(m, old_logprobs.detach().float(), 0.0)  # (B, T)
    ref = None if ref_logprobs is None else torch.where(m, ref_logprobs.detach().float(), 0.0)
    adv = advantages.detach().float()  # (B,)
    return logp, old, ref, adv, m


def _token_weights(is_weights: Tensor | None, m: Tensor) -> Tensor:
    """(B, T) detached weights, 0 where masked; ones when there are none."""
    if is_weights is None:
        return m.float()
    if tuple(is_weights.shape) != tuple(m.shape):
        raise ValueError(f"is_weights must have the shape of logprobs {tuple(m.shape)}, got {tuple(is_weights.shape)}")
    return torch.where(m, is_weights.detach().float(), 0.0)


def _clipped_surrogate(ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float) -> tuple[Tensor, Tensor]:
    """PPO's pessimistic surrogate min(r*A, clip(r, 1-eps_low, 1+eps_high)*A), elementwise.

    Returns (surrogate, binds). `binds` is True where the clipped term is strictly the
    smaller one, so the gradient there is zero: r > 1+eps_high with A > 0, or
    r < 1-eps_low with A < 0. Where the two terms are equal the unclipped one is taken,
    so the gradient is the plain r*A gradient (no tie-splitting by torch.minimum).
    """
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    binds = clipped < unclipped
    return torch.where(binds, clipped, unclipped), binds


def _k3(logp: Tensor, ref: Tensor | None) -> Tensor:
    """k3 estimator of KL(pi_theta || pi_ref) per token: exp(d) - d - 1 with d = ref - logp."""
    if ref is None:
        return torch.zeros_like(logp)
    d = ref - logp  # (B, T) log pi_ref / pi_theta
    return torch.exp(d) - d - 1.0


def _masked_mean(x: Tensor, m: Tensor) -> Tensor:
    """Mean of x over the entries where m is True (0 if none); any shape.

    Over (B, T) tokens this is DAPO's token-level aggregation: sum_i sum_t x / sum_i |o_i|.
    """
    return torch.where(m, x, 0.0).sum() / m.sum().clamp(min=1)


def _sequence_mean(x: Tensor, m: Tensor) -> Tensor:
    """GRPO's aggregation: 1/G sum_i 1/|o_i| sum_t x_it (mean per sequence, then over sequences)."""
    n = m.sum(-1)  # (B,) tokens per sequence
    per_sequence = torch.where(m, x, 0.0).sum(-1) / n.clamp(min=1)  # (B,)
    return _masked_mean(per_sequence, n > 0)


def _constant_length_sum(x: Tensor, m: Tensor, length: int) -> Tensor:
    """Dr. GRPO's aggregation: 1/G sum_i 1/T sum_t x_it with T = `length`, a constant of
    the run, so padding, micro-batching and ranks never change a token's weight."""
    per_sequence = torch.where(m, x, 0.0).sum(-1) / length  # (B,)
    return _masked_mean(per_sequence, m.any(-1))


def _output(loss: Tensor, clipped: Tensor, ratio: Tensor, over: Tensor, kl: Tensor, m: Tensor) -> LossOutput:
    """Package the loss with float stats; clipped/ratio are averaged over `over`, kl over m."""
    with torch.no_grad():
        return LossOutput(
            loss=loss,
            clip_fraction=_masked_mean(clipped.float(), over).item(),
            kl=_masked_mean(kl, m).item(),
            ratio_mean=_masked_mean(ratio, over).item(),
        )


# ---------------------------------------------------------------------------------------
# The variants.


def grpo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    is_weights: Tensor | None = None,
) -> LossOutput:
    """Vanilla GRPO (DeepSeekMath, arXiv 2402.03300).

        J = 1/G sum_i 1/|o_i| sum_t min(r_it A_i, clip(r_it, 1-eps_low, 1+eps_high) A_i) - beta KL

    PPO's clipped surrogate per token, averaged over each completion's own tokens, then
    over completions. The per-sequence 1/|o_i| is what Dr. GRPO calls a length bias: a
    long wrong answer is penalised less per token than a short one.
    """
    logp, old, ref, adv, m = _prepare(logprobs, old_logprobs, advantages, mask, ref_logprobs, beta)
    ratio = torch.exp(logp - old)  # (B, T)
    surrogate, binds = _clipped_surrogate(ratio, adv[:, None], eps_low, eps_high)  # (B, T)
    surrogate = surrogate * _token_weights(is_weights, m)
    kl = _k3(logp, ref)  # (B, T)
    loss = -_sequence_mean(surrogate, m) + beta * _sequence_mean(kl, m)
    return _output(loss, binds, ratio, m, kl, m)


def dr_grpo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    length: int,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    is_weights: Tensor | None = None,
) -> LossOutput:
    """Dr. GRPO, "GRPO done right" (arXiv 2503.20783).

        J = 1/G sum_i 1/T sum_t min(r_it A_i, clip(r_it) A_i),   T = length

    Differs from GRPO only in the aggregation: each completion's token sum is divided by
    a constant T, not by its own length |o_i|, so every token weighs the same whatever
    the length of its completion. T must be a constant of the run (the trainer passes
    `algorithm.dr_grpo_length`, default `sampling.max_tokens`; TRL uses
    max_completion_length): were it the batch's padded width, one long sequence would
    shrink every token's gradient in the step, and how the batch is split into
    micro-batches or ranks would change the update. G counts the completions with at
    least one trained token. Dr. GRPO's other change, no std division of the
    advantages, lives in `group_advantages(rewards, scale="none")`.
    """
    if length <= 0:
        raise ValueError(f"dr_grpo's length T must be positive, got {length}")
    logp, old, ref, adv, m = _prepare(logprobs, old_logprobs, advantages, mask, ref_logprobs, beta)
    ratio = torch.exp(logp - old)  # (B, T)
    surrogate, binds = _clipped_surrogate(ratio, adv[:, None], eps_low, eps_high)  # (B, T)
    surrogate = surrogate * _token_weights(is_weights, m)
    kl = _k3(logp, ref)  # (B, T)
    loss = -_constant_length_sum(surrogate, m, length) + beta * _constant_length_sum(kl, m, length)
    return _output(loss, binds, ratio, m, kl, m)


def dapo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    is_weights: Tensor | None = None,
) -> LossOutput:
    """DAPO (arXiv 2503.14476).

        J = 1/sum_i |o_i| * sum_i sum_t min(r_it A_i, clip(r_it, 1-eps_low, 1+eps_high) A_i)

    Differs from GRPO in the loss by (1) token-level normalisation: one mean over every
    token of the batch, so long completions weigh in proportion to their length; and
    (2) clip-higher: eps_high (0.28) > eps_low (0.2), letting low-probability tokens
    grow more, against entropy collapse. DAPO drops the KL term (beta=0 by default here
    too). Its dynamic sampling and overlong filtering are batch filters, in
    `lmgym.train.advantages`.
    """
    logp, old, ref, adv, m = _prepare(logprobs, old_logprobs, advantages, mask, ref_logprobs, beta)
    ratio = torch.exp(logp - old)  # (B, T)
    surrogate, binds = _clipped_surrogate(ratio, adv[:, None], eps_low, eps_high)  # (B, T)
    surrogate = surrogate * _token_weights(is_weights, m)
    kl = _k3(logp, ref)  # (B, T)
    loss = -_masked_mean(surrogate, m) + beta * _masked_mean(kl, m)
    return _output(loss, binds, ratio, m, kl, m)


def gspo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    is_weights: Tensor | None = None,
) -> LossOutput:
    """GSPO, group sequence policy optimisation (arXiv 2507.18071).

        s_i = (pi_theta(o_i) / pi_old(o_i))^(1/|o_i|) = exp(1/|o_i| sum_t (logp_it - old_it))
        J   = 1/G sum_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)

    Differs from GRPO in the importance ratio: one length-normalised ratio per
    completion (the geometric mean of its token ratios) instead of one per token, so the
    off-policy correction and the clip act on whole sequences, matching the reward's
    unit. Because s_i is a mean of log-ratios, the clip range is tiny (paper: 3e-4 /
    4e-4). This is the sequence-level objective; the gradient reaches each token's
    logprob through s_i (d s_i / d logp_it = s_i / |o_i|). clip_fraction and ratio_mean
    are over sequences. The KL term, if any, uses GRPO's per-sequence token mean.
    """
    logp, old, ref, adv, m = _prepare(logprobs, old_logprobs, advantages, mask, ref_logprobs, beta)
    n = m.sum(-1)  # (B,) tokens per sequence
    has_tokens = n > 0  # (B,)
    s = torch.exp((logp - old).sum(-1) / n.clamp(min=1))  # (B,) sequence ratio
    surrogate, binds = _clipped_surrogate(s, adv, eps_low, eps_high)  # (B,)
    surrogate = surrogate * _token_weights(is_weights, m).sum(-1) / n.clamp(min=1)  # mean weight per sequence
    kl = _k3(logp, ref)  # (B, T)
    loss = -_masked_mean(surrogate, has_tokens) + beta * _sequence_mean(kl, m)
    return _output(loss, binds, s, has_tokens, kl, m)


def cispo(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    cap: float = 5.0,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    is_weights: Tensor | None = None,
) -> LossOutput:
    """CISPO, clipped IS-weight policy optimisation (MiniMax-M1, arXiv 2506.13585).

        J = 1/sum_i |o_i| * sum_i sum_t sg(min(r_it, cap)) A_i log pi_theta(o_it)

    Differs from GRPO in what is clipped: not the update but the importance weight,
    which is then detached (sg = stop-gradient) and multiplies a REINFORCE term
    A * log pi. No min with the unclipped term, so no token ever loses its gradient:
    with PPO's clip, rare tokens whose ratio jumps past 1+eps (the "However", "Wait"
    forks of a reasoning chain) are dropped after the first update; here they keep
    contributing with a capped weight. Gradient per token: min(r_it, cap) * A_i /
    sum_i |o_i|. Token-level normalisation as DAPO.

    `cap` is the largest weight itself, not an offset from 1: the same number as TRL's
    `epsilon_high` for its cispo loss (5.0 in TRL's docs, the default here). The paper
    imposes no lower bound, and there is none. clip_fraction is the share of tokens
    whose weight was capped (r > cap); their gradient still flows, scaled by cap.
    """
    if cap <= 0:
        raise ValueError(f"cispo's cap must be positive, got {cap}")
    logp, old, ref, adv, m = _prepare(logprobs, old_logprobs, advantages, mask, ref_logprobs, beta)
    ratio = torch.exp(logp - old)  # (B, T)
    weight = ratio.clamp(max=cap).detach()  # (B, T) sg(min(r, cap))
    capped = ratio > cap  # (B, T)
    kl = _k3(logp, ref)  # (B, T)
    loss = -_masked_mean(weight * _token_weights(is_weights, m) * adv[:, None] * logp, m) + beta * _masked_mean(kl, m)
    return _output(loss, capped, ratio, m, kl, m)


LOSSES: dict[str, LossFn] = {"grpo": grpo, "dr_grpo": dr_grpo, "dapo": dapo, "gspo": gspo, "cispo": cispo}


# What each variant averages over: completions (grpo, dr_grpo, gspo) or tokens (dapo, cispo).
# Gradient accumulation weighs a micro-batch by its share of these units, so the
# accumulated gradient equals the gradient of the loss over the whole batch.
AVERAGED_OVER = {"grpo": "completions", "dr_grpo": "completions", "gspo": "completions", "dapo": "tokens", "cispo": "tokens"}


def batch_units(loss: str, mask: Tensor) -> float:
    """How many of the variant's averaging units (AVERAGED_OVER) a (B, T) mask holds."""
    return float(mask.sum()) if AVERAGED_OVER[loss] == "tokens" else float((mask.sum(-1) > 0).sum())
