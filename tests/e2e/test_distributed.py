"""Data parallelism: two processes with half a batch each make the update one process makes
with the whole batch; and `lmgym train --nproc 2` runs end to end on the CPU (gloo)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from paths import FIXTURES
from train_setups import CONFIG, SMALL, torchrun  # noqa: E402

from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.metrics import NullSink  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402

WORKER = FIXTURES / "ddp_step.py"
LOSSES = ["grpo", "dr_grpo", "dapo", "cispo"]


def test_two_processes_with_half_the_batch_make_the_same_update(tmp_path):
    overrides = [*SMALL, "trainer.lr=1e-2", "sampling.temperature=1.0"]
    trainer = build_loop(load_config(CONFIG, overrides), tmp_path / "gen", NullSink())
    batch = trainer.orchestrator.next_batch(0)
    informative = sum(a != 0 for a in batch.advantages)
    assert informative >= 4, "the batch should train something"
    saved = tmp_path / "batch.pt"
    torch.save({"batch": batch, "config": str(CONFIG), "overrides": overrides, "losses": LOSSES}, saved)

    single = {}
    for loss in LOSSES:
        one = build_loop(load_config(CONFIG, [*overrides, f"algorithm.loss={loss}"]), tmp_path / loss, NullSink())
        initial = {n: p.detach().clone() for n, p in one.model.named_parameters()}
        one.trainer.step(batch)
        single[loss] = {n: p.detach().clone() for n, p in one.model.named_parameters()}
        assert any(not torch.equal(initial[n], single[loss][n]) for n in initial)  # the step moved the weights

    result = torchrun(2, str(WORKER), str(saved))
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp_weights.pt")
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
