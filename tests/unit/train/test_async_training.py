"""Asynchronous generation with bounded staleness, importance-sampling metrics, and sampled rollouts on disk."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from train_setups import ListSink, small_config  # noqa: E402

from lmgym.train.orchestrator import AsyncOrchestrator, Orchestrator  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402


def run(tmp_path, *extra: str):
    sink = ListSink()
    loop = build_loop(small_config(tmp_path, *extra), tmp_path, sink)
    loop.run()
    return loop, [metrics for _, metrics in sink.rows]


@pytest.mark.parametrize("bound", [1, 2])
def test_async_batches_are_never_staler_than_the_bound(tmp_path, bound):
    trainer, rows = run(tmp_path, "trainer.max_steps=5", f"algorithm.max_off_policy_steps={bound}", "algorithm.importance_sampling=tis")
    assert isinstance(trainer.orchestrator, AsyncOrchestrator)
    staleness = [m["staleness"] for m in rows]
    assert staleness[0] == 0 and max(staleness) <= bound
    assert max(staleness) >= 1  # generation really ran ahead of training
    assert all(m["batches_dropped_stale"] == 0 for m in rows)
    trained = [m for m in rows if "is_weight_mean" in m]  # a step whose advantages were all 0 trains nothing
    assert trained and all(0.0 <= m["is_capped_fraction"] <= 1.0 and m["is_weight_mean"] > 0 and m["mismatch_kl"] >= 0 for m in trained)
    assert trainer.orchestrator._thread is None  # closed after training
    assert not [t for t in threading.enumerate() if t.name == "lmgym-generation"]


def test_stale_tokens_get_importance_weights_that_differ_from_one(tmp_path):
    _, rows = run(tmp_path, "trainer.max_steps=4", "trainer.lr=3e-3", "algorithm.max_off_policy_steps=1", "algorithm.importance_sampling=tis")
    stale = [m for m in rows if m["staleness"] >= 1 and "is_weight_mean" in m]
    assert stale and any(abs(m["is_weight_mean"] - 1.0) > 1e-4 for m in stale)
    assert any(m["mismatch_kl"] > 1e-6 for m in stale)


def test_synchronous_batches_are_on_policy(tmp_path):
    trainer, rows = run(tmp_path, "trainer.max_steps=2", "algorithm.importance_sampling=mis")
    assert type(trainer.orchestrator) is Orchestrator
    assert [m["staleness"] for m in rows] == [0.0, 0.0]
    trained = [m for m in rows if "mismatch_kl" in m]
    assert trained and all(m["mismatch_kl"] < 1e-4 and m["is_capped_fraction"] == 0.0 for m in trained)  # the engine samples what the trainer computes


def test_the_sampler_gets_the_published_weights(tmp_path):
    trainer = build_loop(small_config(tmp_path, "algorithm.max_off_policy_steps=1"), tmp_path, ListSink())
    orchestrator = trainer.orchestrator
    first = orchestrator.next_batch(0)
    assert first.policy_version == 0
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.01)
    orchestrator.publish(trainer.model, 1)
    versions = [orchestrator.next_batch(step).policy_version for step in (1, 2)]
    assert versions[-1] == 1  # sampled after the new weights arrived
    orchestrator.close()


def test_a_failure_in_generation_reaches_the_trainer(tmp_path, monkeypatch):
    trainer = build_loop(small_config(tmp_path, "algorithm.max_off_policy_steps=1", "trainer.max_steps=3"), tmp_path, ListSink())

    def broken(client, version):
        raise RuntimeError("generation broke")

    monkeypatch.setattr(trainer.orchestrator, "_sample", broken)
    with pytest.raises(RuntimeError, match="generation broke"):
        trainer.run()
    assert trainer.orchestrator._thread is None


def test_checkpoints_keep_the_data_position_of_the_trained_batch(tmp_path):
    trainer, _ = run(tmp_path, "trainer.max_steps=2", "algorithm.max_off_policy_steps=2", "checkpoint.every=2")
    examples_per_step = trainer.config.algorithm.prompts_per_step
    assert trainer.data_position == {"epoch": 0, "index": 2 * examples_per_step}
    assert trainer.orchestrator.data.position["index"] > 2 * examples_per_step  # generation ran ahead


def test_sampled_rollouts_are_saved_per_step(tmp_path):
    run(tmp_path, "trainer.max_steps=2", "logging.samples_per_step=3")
    records = [json.loads(line) for line in (Path(tmp_path) / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 1, 1, 2, 2, 2]
    assert all(r["completion"] and r["reward"] is not None for r in records)
