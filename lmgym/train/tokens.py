"""Token-exact trajectories: what the trainer sees is what the sampler produced.

A multi-turn rollout becomes one token sequence:

    prompt ids | completion 1 (as sampled) | env delta 1 | completion 2 | env delta 2 | ...
    mask 0       mask 1, sampler logprobs    mask 0        mask 1         mask 0

The engines' renderer (`lmgym.train.render`) makes each turn's prompt the previous
turn's ids extended by the template's continuation, so the turns concatenate. When a
template does not extend (Qwen3-style templates strip `<think>` from earlier turns), that
turn's prompt was rendered afresh, and `rollout_samples` splits the rollout into one
sample per turn (each still token-exact) instead of crashing (verifiers #115 and
prime-rl #947 crashed). The trainer counts such rollouts.

This module alone knows the layout the trainer computes on (`trained_tensors`,
`token_logprobs`): logits at position t score token t+1, so the loss mask, the sampler's
logprobs and the policy's logprobs are all (B, T-1-start), for the tokens at positions
start+1 .. T-1, where `start` is the first column in which any sample trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from lmgym.types import Rollout


@dataclass
class TokenSample:
    """One training sequence: ids, a loss mask (1 = sampled by the policy) and the
    sampler's logprobs (0.0 where the mask is 0)."""

    input_ids: list[int]
    loss_mask: list[int]
    sampler_logprobs: list[float]
    truncated: bool = False
    rollout_index: int = 0  # which rollout of the batch it came from (for its advantage)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_completion_tokens(self) -> int:
        return sum(self.loss_mask)


def _turn_parts(rollout: Rollout) -> list[tuple[list[int], list[int], list[float]]]:
    parts = []
    for number, turn in enumerate(rollout.turns, start=1):
        if turn.prompt_token_ids is None or turn.token_ids is None or turn.logprobs is None:
            raise ValueError(
                f"turn {number} of rollout {rollout.index} has no token ids: train through LocalClient"
            )
        parts.append((turn.prompt_token_ids, turn.token_ids, turn.logprobs))
    return parts


def _single_sequence(parts, max_seq_len: int) -> TokenSample | None:
    """Concatenate the turns if each prompt extends the previous sequence, else None."""
    first_prompt = parts[0][0]
    ids, mask, logprobs = list(first_prompt), [0] * len(first_prompt), [0.0] * len(first_prompt)
    for k, (prompt, completion, completion_logprobs) in enumerate(parts):
        if k > 0:
            if prompt[: len(ids)] != ids:
                return None
            delta = prompt[len(ids):]
            ids += delta
            mask += [0] * len(delta)
            logprobs += [0.0] * len(delta)
        ids += completion
        mask += [1] * len(completion)
        logprobs += list(completion_logprobs)
    return _truncate(TokenSample(ids, mask, logprobs), max_seq_len)


def _truncate(sample: TokenSample, max_seq_len: int) -> TokenSample:
    if len(sample.input_ids) <= max_seq_len:
        return sample
    return TokenSample(
        sample.input_ids[:max_seq_len], sample.loss_mask[:max_seq_len], sample.sampler_logprobs[:max_seq_len], True
    )


def rollout_samples(rollout: Rollout, max_seq_len: int) -> tuple[list[TokenSample], bool]:
    """The training samples of one rollout and whether it had to be split per turn.

    A rollout whose last completion stopped on length (`finish_reason == "length"`) or
    that was cut at `max_seq_len` is marked truncated (for overlong filtering)."""
    parts = _turn_parts(rollout)
    cut_short = bool(rollout.turns) and rollout.turns[-1].finish_reason == "length"
    whole = _single_sequence(parts, max_seq_len)
    if whole is not None:
        whole.truncated = whole.truncated or cut_short
        return [whole], False
    samples = [
        _truncate(TokenSample(list(p) + list(c), [0] * len(p) + [1] * len(c), [0.0] * len(p) + list(lp)), max_seq_len)
        for p, c, lp in parts
    ]
    samples[-1].truncated = samples[-1].truncated or cut_short
    return samples, True


@dataclass
class TrainedTensors:
    """A batch as the trainer consumes it: the whole sequences, and the loss mask and the
    sampler's logprobs of the trained window (see the module docstring)."""

    input_ids: Any  # (B, T)
    attention_mask: Any  # (B, T)
    loss_mask: Any  # (B, T-1-start): 1 where token start+1+t was sampled by the policy
    sampler_logprobs: Any  # (B, T-1-start)
    start: int  # the first trained column: logits before it are never computed

    def rows(self, rows: Any) -> TrainedTensors:
        """The same window for the samples at `rows` (a LongTensor)."""
        return TrainedTensors(self.input_ids[rows], self.attention_mask[rows], self.loss_mask[rows], self.sampler_logprobs[rows], self.start)


def trained_tensors(samples: Sequence[TokenSample], pad_id: int, device: Any = "cpu") -> TrainedTensors:
    """The samples right-padded, and the window of positions that any of them trains."""
    tensors = pad_batch(samples, pad_id, device)
    targets = tensors["loss_mask"][:, 1:]  # (B, T-1): 1 where token t+1 was sampled
    start = first_trained_position(targets)
    return TrainedTensors(tensors["input_ids"], tensors["attention_mask"], targets[:, start:], tensors["sampler_logprobs"][:, start + 1 :], start)


def first_trained_position(mask: Any) -> int:
    """The first column of a (B, T) loss mask where any row trains (0 if none)."""
    columns = mask.any(dim=0).nonzero()
    return int(columns[0]) if len(columns) else 0


def token_logprobs(model: Any, input_ids: Any, attention_mask: Any, temperature: float, start: int = 0) -> Any:
    """Logprob of each next token under logits / temperature, as the sampler drew it:
    (B, T-1-start) in float32, for the tokens at positions start+1 .. T-1.

    Logits are computed only from position `start` on: over the prompt they would be
    thrown away, and the vocabulary projection is the largest matmul of a small model. They
    are computed a chunk of positions at a time, never the whole batch's at once
    (`lmgym.train.logprobs`)."""
    from lmgym.train.logprobs import next_token_logprobs

    return next_token_logprobs(model, input_ids, attention_mask, temperature, start)


def pad_batch(samples: Sequence[TokenSample], pad_id: int, device: Any = "cpu"):
    """Right-padded tensors (B, T): input_ids, attention_mask, loss_mask, sampler_logprobs."""
    import torch

    width = max(len(s.input_ids) for s in samples)
    pad = lambda values, fill: values + [fill] * (width - len(values))  # noqa: E731
    return {
        "input_ids": torch.tensor([pad(s.input_ids, pad_id) for s in samples], dtype=torch.long, device=device),
        "attention_mask": torch.tensor([pad([1] * len(s.input_ids), 0) for s in samples], dtype=torch.long, device=device),
        "loss_mask": torch.tensor([pad(s.loss_mask, 0) for s in samples], dtype=torch.float32, device=device),
        "sampler_logprobs": torch.tensor([pad(s.sampler_logprobs, 0.0) for s in samples], dtype=torch.float32, device=device),
    }
