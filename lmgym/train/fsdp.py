"""Fully sharded data parallelism (`trainer.strategy = "fsdp"`): each rank keeps 1/N of the
weights, gradients and AdamW state, through torch's FSDP2 (`fully_shard`).

Why: under DDP every rank holds the whole model, its gradients and two AdamW moments, so
a model that does not fit one device does not train at all. FSDP2 shards every parameter
as a DTensor over the ranks; a decoder layer's full weights exist only while that layer
runs (all-gathered before it, freed after), and each backward pass reduce-scatters the
gradient so a rank keeps only its shard of the sum.

How it keeps the update of one process with the whole batch (as DDP does):

- Gradients are *summed* over ranks, not averaged: the trainer already weighs every
  micro-batch by its share of the loss's units over all ranks (`global_units`), so FSDP's
  default division by N is turned off (divide factor 1, and a SUM reduce-scatter, which
  gloo also has). The DDP all-reduce (`distributed.sum_gradients`) does not run.
- Every rank runs the same number of forward and backward passes, since each one is a
  collective: a rank with fewer informative micro-batches runs a filler pass whose loss
  is multiplied by 0 (`filler_backward`).
- Passes without gradients that each rank runs its own way (sampling rollouts, the
  reference and old logprobs, rank 0's evaluation) run inside `full_weights`: the weights
  are gathered once on every rank, the passes run with no collectives, and the shards
  are put back. That costs one full copy of the weights for those passes (as handing
  them to a sampler would); the gradients and AdamW state stay sharded throughout.
- The gradient norm for clipping is the norm of the whole gradient (`clip_grad_norm`):
  each rank's local norm is combined over the ranks before the scale is applied.

Precision: the weights stay float32 and are all-gathered in float32; `model.dtype`
bfloat16 runs under autocast as in one process (`lmgym.train.precision`), not through
FSDP's MixedPrecisionPolicy. A policy would all-gather bfloat16 (half the traffic) but
run norms and softmax in bfloat16 too, so FSDP's numbers would drift from the DDP and
one-process runs that the exactness tests compare it with; autocast keeps them equal.
float16 (loss scaling over sharded gradients) is refused.

Under FSDP the model's forward runs whole (the root unit's hooks gather the embeddings
and the head), so the logits of a micro-batch are made at once and only the softmax is
chunked (`lmgym.train.logprobs.run_whole`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from lmgym.errors import UsageError
from lmgym.train.logprobs import base_model, run_whole

STRATEGIES = ("ddp", "fsdp")


def decoder_layers(model: Any) -> list[torch.nn.Module]:
    """The model's repeated blocks, the units FSDP gathers one at a time: the modules whose
    class transformers lists in `_no_split_modules` (the blocks it never splits across
    devices). A model without them cannot be sharded layer by layer: one clear error."""
    base = base_model(model)
    names = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in base.modules() if type(m).__name__ in names]
    if not layers:
        raise UsageError(
            f'trainer.strategy = "fsdp": no decoder layers found in {type(base).__name__} '
            f"(it lists none in _no_split_modules, or none of those is in the model); "
            f'use trainer.strategy = "ddp"'
        )
    return layers


def require_shardable(config: Any, model: Any) -> None:
    """Refuse, before anything runs, what FSDP cannot train here."""
    if config.model.dtype == "float16":
        raise UsageError('trainer.strategy = "fsdp" trains in float32 or bfloat16; model.dtype = "float16" needs loss scaling over sharded gradients, which it lacks')
    if config.algorithm.max_off_policy_steps > 0:
        raise UsageError('trainer.strategy = "fsdp" samples with the gathered weights between steps; asynchronous generation (algorithm.max_off_policy_steps > 0) is not supported with it')
    decoder_layers(model)


def shard_model(model: Any) -> None:
    """FSDP2 on `model` in place: one unit per decoder layer, then the transformers model
    itself (embeddings, final norm, head); gradients are summed over ranks, not averaged."""
    base = base_model(model)
    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=True)
    fully_shard(base)
    for unit in units(model):
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    run_whole(model)


def units(model: Any) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: Any) -> bool:
    return bool(units(model))


@contextlib.contextmanager
def full_weights(*models: Any) -> Iterator[None]:
    """Every rank holds the full weights of `models` inside (gathered once, on entry), so
    passes without gradients may run in any number on any rank; resharded on exit. Every
    rank must enter. A no-op for a model that is not sharded."""
    sharded = [u for m in models if m is not None for u in units(m)]
    for unit in sharded:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        roots = {id(base_model(m)) for m in models if m is not None}
        for unit in sharded:
            unit.reshard()
            if id(unit) not in roots:  # the root keeps FSDP's own choice: no reshard after forward
                unit.set_reshard_after_forward(True, recurse=False)


def filler_backward(model: Any, device: torch.device, autocast: Any) -> None:
    """A forward and backward pass that adds exactly zero to every gradient: it keeps this
    rank's collectives in step with ranks that have more micro-batches to train."""
    ids = torch.zeros((1, 1), dtype=torch.long, device=device)
    with autocast():
        logits = model(input_ids=ids, use_cache=False).logits
    (logits.float().sum() * 0.0).backward()


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip to `max_norm` by the norm of the whole gradient; with sharded (DTensor)
    gradients the local norms are combined over the ranks first."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A parameter's whole value on every rank (a collective for a shard)."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
