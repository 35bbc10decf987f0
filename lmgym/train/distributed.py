"""Data parallelism over torch.distributed: N processes, each a full trainer on 1/N of the prompts.

`lmgym train CONFIG --nproc N` starts N copies of itself with `torch.distributed.run`
(torchrun; gloo on CPUs, nccl on GPUs, one GPU per process). Every rank samples and
scores its own share of each step's prompts with its own engine, computes its
gradient, and the gradients are summed with one all-reduce before the optimiser step, so
every rank applies the same update and the weights never drift apart.

The sum is exact, not an average of averages: each micro-batch is weighed by its share of
the loss's averaging units over *all* ranks (`global_units`), so N processes with 1/N of
the batch each produce the gradient of one process with the whole batch (dr_grpo's T is
a constant of the run, not a rank's padded width). Rank 0 alone logs, evaluates and
writes checkpoints and samples.

That is `trainer.strategy = "ddp"`; `"fsdp"` shards the weights, gradients and optimizer
state over the same ranks instead of copying them (`lmgym.train.fsdp`), with the same
weighting, so the update is again that of one process.

Outside torchrun (no WORLD_SIZE in the environment) everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

from lmgym.errors import LmgymError


class ReportedByMain(LmgymError):
    """Raised by the ranks other than 0 for an error that rank 0 raises and reports, so
    that the user reads it once (`stop_together`)."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    """This process's place, as torchrun sets it (RANK, WORLD_SIZE, LOCAL_RANK)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def setup(world: World, device: torch.device) -> None:
    """Join the process group (once): nccl for CUDA, gloo otherwise."""
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """Each rank on its own GPU; ranks share the CPU."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def shard(items: Sequence[Any], world: World) -> list[Any]:
    """This rank's share: every size-th item from position rank."""
    return list(items[world.rank :: world.size])


def sum_over_ranks(value: float, world: World) -> float:
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor)


def max_over_ranks(value: int, world: World) -> int:
    """The largest of every rank's `value` (how many passes all must run in step)."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


def gather_to_main(value: Any, world: World) -> list[Any] | None:
    """Every rank's `value`, in rank order, on rank 0 (None elsewhere); every rank calls it."""
    if not world.distributed:
        return [value]
    gathered: list[Any] | None = [None] * world.size if world.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def from_main(value: Any, world: World) -> Any:
    """Rank 0's `value` on every rank (a decision only rank 0 could make); every rank calls it."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    """Every rank waits here until all have arrived."""
    if world.distributed:
        dist.barrier()


def stop_together(error: Exception | None, world: World) -> None:
    """Rank 0's `error`, when it has one, stops every rank: rank 0 raises it and the other
    ranks `ReportedByMain`, instead of waiting for rank 0 in a collective that never comes.
    Every rank calls it."""
    if not from_main(error is not None, world):
        return
    if world.is_main:
        raise error
    raise ReportedByMain("rank 0 reports the error")


def sum_gradients(params: Sequence[torch.Tensor], world: World) -> None:
    """Sum every parameter's gradient over the ranks, in one flat all-reduce."""
    if not world.distributed:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_metrics(metrics: dict[str, float], world: World) -> dict[str, float]:
    """Each metric averaged over the ranks that report it (a rank that trained nothing
    has no loss statistics), gathered to every rank."""
    if not world.distributed:
        return metrics
    gathered: list[dict[str, float]] = [{} for _ in range(world.size)]
    dist.all_gather_object(gathered, metrics)
    keys = dict.fromkeys(k for m in gathered for k in m)
    return {k: sum(m[k] for m in gathered if k in m) / sum(k in m for m in gathered) for k in keys}
