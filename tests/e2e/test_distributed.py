"""Data parallelism: two processes with half a batch each make the update one process makes
with the whole batch; and `lmgym train --nproc 2` runs end to end on the CPU (gloo)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from rank_steps import LOSSES, results  # noqa: E402


def test_two_processes_with_half_the_batch_make_the_same_update(rank_step_runs):
    single, result, ddp_weights = results(rank_step_runs, "distributed")  # prepared by rank_steps.distributed
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(ddp_weights)
    for loss in LOSSES:
        worst = max(float((single[loss][n] - ddp[loss][n]).abs().max()) for n in single[loss])
        print(f"{loss}: largest difference between 2 processes and 1: {worst:.1e}")
        assert worst < 1e-5, f"{loss}: two processes differ from one by {worst}"


def test_lmgym_train_with_two_processes(two_process_run):
    run_dir, result = two_process_run
    assert result.returncode == 0, result.output[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # rank 0 alone logs
    assert (run_dir / "final").is_dir() and (run_dir / "checkpoints").is_dir()
