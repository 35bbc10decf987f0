"""Checkpoints of a sharded (FSDP) run: every rank writes its own shards, through
`torch.distributed.checkpoint` (DCP), and rank 0 the rest.

    RUN_DIR/checkpoints/step_000020/state.pt          step, schedule, data position, log sizes,
                                                      every rank's RNG states (as
                                                      `lmgym.train.checkpoint`; weights and optimizer
                                                      are empty there, "sharded" set)
    RUN_DIR/checkpoints/step_000020/shards/           DCP: the trained weights (all, or the LoRA
                                                      adapter) and AdamW's state, one file per rank
    RUN_DIR/checkpoints/step_000020/model/            the policy as a transformers folder, written
                                                      by rank 0 from the gathered full weights

Why DCP: no rank ever holds the whole optimizer state, and a checkpoint reloads into the
same shards (or, through DCP's resharding, into another number of ranks). The write is
atomic as the unsharded one: every rank writes into `.tmp_step_N`, and rank 0 renames it
once all have finished, so a kill leaves the previous checkpoint whole.

`plain_copy` turns the sharded policy into an ordinary module on rank 0 (the weights
gathered to its CPU), which `save_pretrained` and peft's `merge_and_unload` take as they
take an unsharded one: that is how `final/` and each checkpoint's `model/` are written.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from lmgym.train import checkpoint as ckpt
from lmgym.train.distributed import World
from lmgym.train.logprobs import base_model

SHARDS = "shards"
TRAINED = StateDictOptions(ignore_frozen_params=True)  # LoRA: the adapter, not the frozen base
# loading them back leaves the frozen base as it is; DCP itself fails on a trained key it lacks
TRAINED_INTO = StateDictOptions(ignore_frozen_params=True, strict=False)


def save_sharded(
    run_dir: Path, step: int, state: dict[str, Any], model: Any, optimizer: Any, tokenizer: Any, keep: int,
    world: World,
) -> Path:
    """Write step `step`'s checkpoint; every rank calls it. `state` (rank 0's, holding every
    rank's RNG states) is what `lmgym.train.checkpoint` keeps in state.pt."""
    final = run_dir / ckpt.CHECKPOINTS / f"step_{step:06d}"
    tmp = final.with_name(f".tmp_{final.name}")
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer, options=TRAINED)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / SHARDS)
    plain = plain_copy(model)
    if world.is_main:
        torch.save({**state, "sharded": True}, tmp / ckpt.STATE_FILE)
        plain.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
    dist.barrier()  # every rank's files are in tmp
    if world.is_main:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in ckpt.list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_sharded(checkpoint: Path, model: Any, optimizer: Any) -> None:
    """Load this rank's shards of the weights and AdamW's state from `checkpoint`."""
    model_state, optimizer_state = get_state_dict(model, optimizer, options=TRAINED)
    saved = {"model": model_state, "optimizer": optimizer_state}
    dcp.load(saved, checkpoint_id=checkpoint / SHARDS)
    set_state_dict(model, optimizer, model_state_dict=saved["model"], optim_state_dict=saved["optimizer"], options=TRAINED_INTO)


def plain_copy(model: Any) -> Any:
    """On rank 0, an unsharded copy of `model` (a peft model stays one) with the full
    weights on the CPU; None on the other ranks. Every rank calls it (it gathers)."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not full:
        return None
    base = base_model(model)
    with torch.device("meta"):
        copy = type(base)._from_config(base.config)
    if hasattr(model, "peft_config"):
        from peft import get_peft_model

        copy = get_peft_model(copy, model.peft_config[model.active_adapter])
    copy.load_state_dict(full, assign=True, strict=False)
    if hasattr(base_model(copy), "tie_weights"):
        base_model(copy).tie_weights()
    missing = [name for name, p in copy.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"the gathered state dict lacks {missing[:3]}")
    materialise_buffers(copy, base)
    return copy.eval()


def materialise_buffers(copy: Any, source: Any) -> None:
    """Buffers outside the state dict (rotary frequencies) built on the meta device: take
    the source model's, which FSDP never shards."""
    buffers = dict(base_model(source).named_buffers())
    for name, buffer in list(base_model(copy).named_buffers()):
        if buffer.is_meta and name in buffers:
            owner, _, leaf = name.rpartition(".")
            module = base_model(copy).get_submodule(owner) if owner else base_model(copy)
            module.register_buffer(leaf, buffers[name].detach().cpu().clone(), persistent=False)
