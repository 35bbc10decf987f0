"""Group-relative advantages and the DAPO batch filters.

GRPO (DeepSeekMath, arXiv 2402.03300) samples a *group* of N completions per prompt and
scores each completion against its own group, with no value network:

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)

Rewards come in as a (G, N) tensor: G prompts (groups), N completions each. Every
completion gets one scalar advantage, broadcast over its tokens by the loss
(`lmgym.train.losses`). Flatten with `.reshape(-1)` to get the losses' (B,) with B = G*N.

The variants here differ from vanilla GRPO only in the denominator:

- ``scale="group"``: vanilla GRPO, divide by the group's std.
- ``scale="none"``: Dr. GRPO (arXiv 2503.20783) drops the std division: it up-weights
  groups that are nearly all right or nearly all wrong (small std), a difficulty bias.
- ``scale="batch"``: centre by the group mean, divide by the std of every reward in the
  batch (LitePPO, "Tricks or Traps?", arXiv 2508.08221): robust to groups with tiny std.

Every std is the population std (``unbiased=False``, divide by N, not N-1): the group is
the whole population being normalised, not a sample of it, and with N=2 the unbiased
std would scale advantages by an extra sqrt(2). ``eps`` is added to the std, and a group
whose rewards are all equal is centred to exactly 0 before any scaling, so it gets
advantage 0, never NaN and never its mean's rounding error divided by eps.

DAPO (arXiv 2503.14476) adds two filters. Dynamic sampling is a mask here
(`dynamic_sampling_mask`): drop groups whose rewards are all equal (advantage 0
everywhere, so no gradient, but they still dilute the batch) and keep sampling until the
batch is full. Overlong filtering (truncated completions get no loss, so the model is not
punished for reasoning that was merely cut off) zeroes their loss mask in the orchestrator
(`algorithm.mask_truncated`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Scale = Literal["none", "group", "batch"]


def _check_groups(rewards: Tensor, name: str = "rewards") -> None:
    if rewards.ndim != 2:
        raise ValueError(f"{name} must have shape (G, N) (groups, group size), got {tuple(rewards.shape)}")
    if rewards.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one group, got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"group size must be at least 2, got {rewards.shape[1]}")


def _as_float(rewards: Tensor) -> Tensor:
    return rewards if rewards.is_floating_point() else rewards.to(torch.get_default_dtype())


# One function per denominator: (rewards (G, N), centred (G, N), eps) -> advantages (G, N).


def _no_scale(rewards: Tensor, centred: Tensor, eps: float) -> Tensor:
    return centred


def _group_scale(rewards: Tensor, centred: Tensor, eps: float) -> Tensor:
    std = rewards.std(dim=1, unbiased=False, keepdim=True)  # (G, 1)
    return centred / (std + eps)


def _batch_scale(rewards: Tensor, centred: Tensor, eps: float) -> Tensor:
    std = rewards.std(unbiased=False)  # () over all G*N rewards
    return centred / (std + eps)


_SCALES: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "none": _no_scale,
    "group": _group_scale,
    "batch": _batch_scale,
}


def group_advantages(rewards: Tensor, scale: Scale = "group", eps: float = 1e-6) -> Tensor:
    """Group-relative advantages: each reward minus its group's mean, optionally scaled.

    rewards: (G, N) float (ints are converted). scale: "group" (vanilla GRPO), "none"
    (Dr. GRPO) or "batch" (group mean, batch std). Returns (G, N).
    """
    _check_groups(rewards)
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {sorted(_SCALES)}, got {scale!r}")
    rewards = _as_float(rewards)
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (G, N)
    # A group of equal rewards is centred to exactly 0: its float mean can round away from the
    # rewards (eight 1.2s in float32), and dividing by std + eps would blow that up to ~0.1.
    centred = centred.masked_fill(~dynamic_sampling_mask(rewards)[:, None], 0.0)
    return _SCALES[scale](rewards, centred, eps)


def dynamic_sampling_mask(rewards: Tensor) -> Tensor:
    """DAPO dynamic sampling (arXiv 2503.14476): True for groups worth training on.

    A group whose rewards are all equal (all right or all wrong) has advantage 0 for
    every completion and gives no gradient. rewards: (G, N). Returns bool (G,): True
    where the group's rewards are not all equal. Compared exactly, not via a std
    threshold, so 0.3 vs 0.3000001 counts as a difference.
    """
    _check_groups(rewards)
    return rewards.amax(dim=1) != rewards.amin(dim=1)  # (G,)
