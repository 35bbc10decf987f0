"""`lmgym train` with `engine.kind = "vllm"`: rollouts on a real vLLM server (CPU build,
own venv), weights published to it after every step. Slow: vLLM takes about a minute to
start. Run with `pytest -m slow tests/e2e/test_vllm_training.py` after `bash benchmarks/setup_vllm.sh`."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.engines.vllm import default_python  # noqa: E402
from lmgym.train.session import train  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not default_python().exists(), reason="no vLLM venv: bash benchmarks/setup_vllm.sh"),
]


@pytest.mark.parametrize("max_off_policy_steps", [0, 1])
def test_lora_training_against_a_vllm_server(tmp_path, max_off_policy_steps):
    config = load_config("configs/arithmetic-smollm2.toml", [
        "engine.kind=vllm", "trainer.max_steps=3", "sft.warm_start=false", "eval.every=3", "eval.num_examples=6",
        "algorithm.prompts_per_step=2", "algorithm.group_size=8", "trainer.micro_batch_size=8", "checkpoint.every=0",
        "sampling.max_tokens=24", f"algorithm.max_off_policy_steps={max_off_policy_steps}", "algorithm.importance_sampling=tis",
        'env.args={max_value = 20, operators = "+-", answer_format = "last-number"}', f"logging.output_dir={tmp_path}",
    ])
    train(config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["step"] >= 1]
    assert [r["step"] for r in steps] == [1, 2, 3] and "eval/reward" in steps[-1]
    trained = [r for r in steps if "mismatch_kl" in r]
    assert trained and all(r["mismatch_kl"] < 1e-3 for r in trained)  # vLLM's logprobs are the trainer's
    assert max(r["staleness"] for r in steps) <= max_off_policy_steps
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir())[-1] == "v3"  # every step was published
    assert (tmp_path / "final").is_dir()
