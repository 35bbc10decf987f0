"""Per-token logprobs of a causal LM, in float32, a chunk of positions at a time.

    next_token_logprobs(model, input_ids, attention_mask, temperature, start) -> (B, T-1-start)

is log softmax(logits / temperature) of each next token, for the tokens at positions
start+1 .. T-1, in float32 whatever the compute dtype (bfloat16 logits are upcast before
the softmax). It is what the sampler computes for the tokens it draws
(`lmgym.train.engines.sampling`), so on-policy importance ratios are 1 up to float error.

The model's body runs once, for hidden states; the vocabulary projection, the upcast and the
log-softmax then run on chunks of positions, so the float32 logits of the whole batch over
the whole vocabulary never exist at once (for a 152k vocabulary they are 0.6 MB per token).
A chunk holds at most `chunk_bytes` of float32 logits (`LOGITS_CHUNK_BYTES`); with
gradients each chunk is checkpointed (`torch.utils.checkpoint`), so the backward pass
recomputes one chunk's logits at a time instead of keeping every chunk's. A batch whose
logits fit in one chunk runs as one piece, with nothing recomputed.

Whether a model's output is its head applied to its body's last hidden state (it is not
for Gemma's soft-capping, Cohere's logit scale, ...) is checked once per model on a few
tokens; a model for which it is not runs whole (its own forward makes the logits), and only
the softmax is chunked.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

LOGITS_CHUNK_BYTES = 256 * 2**20  # float32 logits per chunk (batch rows x positions x vocabulary)
_SEPARABLE = "_lmgym_separable_head"  # the once-per-model check's answer, kept on the model
_CHECK_TOKENS = 8


def base_model(model: Any) -> Any:
    """The transformers model itself, under a LoRA (peft) wrapper if there is one."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _body_and_head(base: Any) -> tuple[Any, Any] | None:
    try:
        body, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if body is None or head is None or body is base:
        return None
    return body, head


def _hidden(body: Any, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state


def separable(model: Any, input_ids: Tensor, attention_mask: Tensor) -> bool:
    """Whether `model`'s logits are its head applied to its body's output: checked once, in
    float32 with dropout off, on the first few tokens of the batch's first row."""
    base = base_model(model)
    known = getattr(base, _SEPARABLE, None)
    if known is not None:
        return known
    parts = _body_and_head(base)
    answer = False
    if parts is not None:
        body, head = parts
        ids, attention = input_ids[:1, :_CHECK_TOKENS], attention_mask[:1, :_CHECK_TOKENS]
        modes = [(m, m.training) for m in base.modules()]
        try:
            base.eval()
            with torch.no_grad(), torch.autocast(ids.device.type, enabled=False):
                whole = model(input_ids=ids, attention_mask=attention, use_cache=False).logits.float()
                split = head(_hidden(body, ids, attention)).float()
            answer = whole.shape == split.shape and torch.allclose(whole, split, rtol=1e-4, atol=1e-4)
        except Exception as exc:  # noqa: BLE001 - any architecture may fail its own way; then it runs whole
            logger.debug("%s: body and head do not run apart (%s)", type(base).__name__, exc)
        finally:
            for module, training in modes:
                module.training = training
    if not answer:
        logger.info("%s: logits come from its own forward (not head(body)); logprobs are chunked after it", type(base).__name__)
    setattr(base, _SEPARABLE, answer)
    return answer


def run_whole(model: Any) -> None:
    """Compute `model`'s logits with its own forward from now on, never head(body): a
    sharded (FSDP) model gathers its embeddings and head in its root's forward hooks."""
    setattr(base_model(model), _SEPARABLE, False)


def _vocab_size(head: Any, fallback: int) -> int:
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if isinstance(weight, Tensor) and weight.ndim == 2 else fallback


def chunk_positions(rows: int, vocab: int, chunk_bytes: int) -> int:
    """How many positions of `rows` rows fit `chunk_bytes` of float32 logits (at least 1)."""
    return max(1, chunk_bytes // max(1, rows * vocab * 4))


def _logprobs_of(logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)


def _head_logprobs(head: Any, hidden: Tensor, targets: Tensor, temperature: float) -> Tensor:
    return _logprobs_of(head(hidden), targets, temperature)


def next_token_logprobs(
    model: Any, input_ids: Tensor, attention_mask: Tensor, temperature: float, start: int = 0,
    *, chunk_bytes: int | None = None,
) -> Tensor:
    """(B, T-1-start) float32 logprobs of the tokens at positions start+1 .. T-1 under
    logits / temperature (temperature 0: the untempered logits, as greedy sampling reports);
    at most `chunk_bytes` (default `LOGITS_CHUNK_BYTES`) of float32 logits at a time."""
    chunk_bytes = LOGITS_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    rows, width = input_ids.shape
    targets = input_ids[:, start + 1 :]  # (B, W)
    if not separable(model, input_ids, attention_mask):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=width - start, use_cache=False).logits
        logits = logits[:, :-1]  # (B, W, V)
        step = chunk_positions(rows, logits.shape[-1], chunk_bytes)
        return torch.cat([_logprobs_of(logits[:, s : s + step], targets[:, s : s + step], temperature)
                          for s in range(0, max(1, targets.shape[1]), step)], dim=1)
    body, head = _body_and_head(base_model(model))
    hidden = _hidden(body, input_ids, attention_mask)[:, start:-1]  # (B, W, H): position t scores token t+1
    step = chunk_positions(rows, _vocab_size(head, getattr(base_model(model).config, "vocab_size", 1)), chunk_bytes)
    if targets.shape[1] <= step:
        return _head_logprobs(head, hidden, targets, temperature)
    recompute = torch.is_grad_enabled() and hidden.requires_grad
    pieces = []
    for s in range(0, targets.shape[1], step):
        args = (head, hidden[:, s : s + step], targets[:, s : s + step], temperature)
        pieces.append(checkpoint(_head_logprobs, *args, use_reentrant=False) if recompute else _head_logprobs(*args))
    return torch.cat(pieces, dim=1)
