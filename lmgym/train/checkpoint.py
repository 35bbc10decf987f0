"""Checkpoints that resume exactly: weights, optimiser, schedule, every RNG, data position.

    RUN_DIR/checkpoints/step_000020/state.pt   trainable weights (all, or the LoRA adapter),
                                               optimiser, LR schedule, RNG states, step,
                                               data position
    RUN_DIR/checkpoints/step_000020/model/     the policy as a transformers folder (adapter
                                               only with LoRA), for eval or further training

A checkpoint (and every model folder of a run) is written to a temporary folder and
renamed into place, so a run killed while saving leaves the previous one intact. Only the
newest `keep` are kept. A checkpoint that cannot be read anyway (a disk that lost the
tail of a file, a state.pt copied from elsewhere) is skipped on resume, with a warning,
for the previous one.

A checkpoint also records how long the run's logs (metrics.jsonl, samples.jsonl) were
when it was saved: the loop (`lmgym.train.loop`) writes a step's rows before it saves the
step's checkpoint, and resuming cuts the logs back to that length, so the steps run again after
a resume are logged once, and a step that has a checkpoint always has its rows.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from lmgym.errors import UsageError

logger = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.pt"
STATE_KEYS = ("step", "weights", "optimizer", "scheduler", "rng", "data")


class CheckpointError(UsageError):
    """A checkpoint that cannot be resumed from; the message names its file."""

    kind = "checkpoint"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def rng_state(engine: Any = None) -> dict[str, Any]:
    """Python's and torch's RNG states, and the rollout engine's (`RolloutEngine.rng_state`)."""
    return {"python": random.getstate(), "torch": torch.get_rng_state(), "engine": engine}


def rank_rng(state: dict[str, Any], rank: int) -> dict[str, Any]:
    """The RNG states rank `rank` saved in `state` (each rank samples its own rollouts);
    rank 0's for a rank the checkpoint did not have, or one written before ranks had theirs."""
    by_rank = state.get("rng_by_rank") or []
    return by_rank[rank] if rank < len(by_rank) else state["rng"]


def restore_rng(state: dict[str, Any]) -> Any:
    """Restore Python's and torch's RNGs from `rng_state`; returns the engine's saved state."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    return state.get("engine")


def write_dir_atomically(final: Path, write: Callable[[Path], Any]) -> Path:
    """Run `write(tmp)` on an empty `.tmp_NAME` next to `final`, then rename it to `final`
    (replacing what was there): a kill at any moment leaves `final` whole or absent."""
    tmp = final.with_name(f".tmp_{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], model: Any, tokenizer: Any, keep: int) -> Path:
    def write(tmp: Path) -> None:
        torch.save(state, tmp / STATE_FILE)
        model.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")

    final = write_dir_atomically(run_dir / CHECKPOINTS / f"step_{step:06d}", write)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / CHECKPOINTS
    return sorted(p for p in root.glob("step_*") if (p / STATE_FILE).exists()) if root.is_dir() else []


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The state saved in `checkpoint`, or a CheckpointError naming its file. Only
    tensors and plain data are unpickled (`weights_only`): a state.pt from elsewhere
    runs no code."""
    path = checkpoint / STATE_FILE
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise CheckpointError(f"{path}: cannot be read ({first_line(exc)})") from None
    missing = [key for key in STATE_KEYS if key not in state] if isinstance(state, dict) else list(STATE_KEYS)
    if missing:
        raise CheckpointError(f"{path}: not an lmgym checkpoint (no {', '.join(missing)})")
    if not isinstance(state["step"], int) or not isinstance(state["weights"], dict):
        raise CheckpointError(f"{path}: not an lmgym checkpoint (step = {state['step']!r:.40})")
    if state.get("sharded") and not (checkpoint / "shards" / ".metadata").exists():  # lmgym.train.sharded_checkpoint
        raise CheckpointError(f"{checkpoint / 'shards'}: the sharded weights are missing")
    return state


def latest_readable_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint whose state can be read, and its state. Unreadable newer ones
    are skipped with a warning naming them; when none can be read, the newest one's error."""
    newest_first = list_checkpoints(run_dir)[::-1]
    first_error: CheckpointError | None = None
    for position, checkpoint in enumerate(newest_first, start=1):
        try:
            return checkpoint, load_state(checkpoint)
        except CheckpointError as exc:
            first_error = first_error or exc
            if position < len(newest_first):
                logger.warning("%s; trying the checkpoint before it", exc)
    if first_error is not None:
        raise CheckpointError(
            f"{first_error}, and no earlier checkpoint can be read; "
            f"delete {run_dir / CHECKPOINTS} to resume from the start"
        )
    return None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def log_sizes(run_dir: Path, names: Iterable[str]) -> dict[str, int]:
    """How many bytes each log file of the run holds now (0 when absent)."""
    return {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0 for name in names}


def rewind_logs(run_dir: Path, sizes: dict[str, int]) -> None:
    """Cut each log back to the size it had at a resume point: what was logged after it
    will be logged again. Files opened for appending elsewhere keep appending at the new end."""
    for name, size in sizes.items():
        path = run_dir / name
        if path.exists() and path.stat().st_size > size:
            os.truncate(path, size)


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in weights if name not in params]
    if missing:
        raise ValueError(f"checkpoint has weights the model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
