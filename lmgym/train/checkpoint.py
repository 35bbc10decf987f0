"""Checkpoints that resume exactly: weights, optimiser, schedule, every RNG, data position.

    RUN_DIR/checkpoints/step_000020/state.pt   trainable weights (all, or the LoRA adapter),
                                               optimiser, LR schedule, RNG states, step,
                                               data position
    RUN_DIR/checkpoints/step_000020/model/     the policy as a transformers folder (adapter
                                               only with LoRA), for eval or further training

A checkpoint is written to a temporary folder and renamed into place, so a run killed
while saving leaves the previous checkpoints intact. Only the newest `keep` are kept.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def rng_state(engine_generator: torch.Generator | None) -> dict[str, Any]:
    engine = engine_generator.get_state() if engine_generator is not None else None
    return {"python": random.getstate(), "torch": torch.get_rng_state(), "engine": engine}


def restore_rng(state: dict[str, Any], engine_generator: torch.Generator | None) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if engine_generator is not None and state.get("engine") is not None:
        engine_generator.set_state(state["engine"])


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], model: Any, tokenizer: Any, keep: int) -> Path:
    root = run_dir / CHECKPOINTS
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp_step_{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE_FILE)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists()) if root.is_dir() else []


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE_FILE, weights_only=False)


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise ValueError(f"checkpoint has weights the model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
