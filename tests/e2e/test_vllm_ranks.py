"""`lmgym train --nproc 2` with `engine.kind = "vllm"`, under ddp and fsdp: two trainer
ranks sample from the one vLLM server (CPU build, own venv) that rank 0 starts, rank 0
publishes the LoRA adapter after each step and the other rank waits for it before
sampling (else its requests would name an adapter the server does not have yet), and
rank 0 stops the server at the end. SmolLM2-135M with LoRA on arithmetic, after the
config's short warm start so that rewards vary and the steps train.

Slow: 4 to 5 minutes each on 2 cores shared with other jobs (the warm start 2.5 of them,
vLLM's start-up under one). Run with
`pytest -m slow tests/e2e/test_vllm_ranks.py -n0` after `bash benchmarks/setup_vllm.sh`."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("torch")

from cli_runner import ROOT, run_process  # noqa: E402
from records import jsonl  # noqa: E402

from lmgym.train.engines.vllm import default_python  # noqa: E402
from lmgym.train.vllm_reachable import unreachable  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not default_python().exists(), reason="no vLLM venv: bash benchmarks/setup_vllm.sh"),
]

STEPS, PROMPTS, GROUP = 2, 2, 8


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_trainer_ranks_sample_from_one_vllm_server_and_train_on_policy(tmp_path, strategy):
    run_dir = tmp_path / "run"
    result = run_process(
        "train", str(ROOT / "configs" / "arithmetic-smollm2.toml"), "--nproc", "2", "--engine.kind", "vllm",
        "--trainer.strategy", strategy, "--trainer.max_steps", str(STEPS), "--sft.max_steps", "10", "--eval.every", "0",
        "--checkpoint.every", "0", "--algorithm.prompts_per_step", str(PROMPTS), "--algorithm.group_size", str(GROUP),
        "--trainer.micro_batch_size", "8", "--sampling.max_tokens", "24", "--algorithm.importance_sampling", "tis",
        "--logging.output_dir", str(run_dir),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = [row for row in jsonl(run_dir / "metrics.jsonl") if "step" in row]  # after the warm start's sft_step rows
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    for row in rows:
        print(f"{strategy} step {row['step']}: sampler_mismatch {row.get('sampler_mismatch', float('nan')):.1e}, "
              f"mismatch_kl {row.get('mismatch_kl', float('nan')):.1e}, grad_norm {row['grad_norm']:.2e}, {row['step_s']:.1f}s")
    trained = [row for row in rows if "mismatch_kl" in row]  # averaged over the ranks that had a gradient
    assert trained, "no step had a gradient on any rank"
    for row in trained:  # each rank sampled from the weights it trained (a stale adapter would not be 1e-6 away)
        assert row["mismatch_kl"] < 1e-3 and row["sampler_mismatch"] < 1e-4, row
    log = (run_dir / "vllm.log").read_text(errors="replace")
    completions = log.count('"POST /v1/completions HTTP/1.1" 200')
    assert completions == STEPS * PROMPTS * GROUP, completions  # both ranks' rollouts, from the one server
    assert {f"policy-v{n}" for n in range(1, STEPS + 1)} <= set(re.findall(r"policy-v\d+", log))  # rank 0 published each step
    assert sorted(p.name for p in (run_dir / "adapters").iterdir()) == [f"v{n}" for n in range(1, STEPS + 1)]
    port = re.search(r"--port (\d+)|http://127\.0\.0\.1:(\d+)", log)
    assert port is not None and unreachable(f"http://127.0.0.1:{port.group(1) or port.group(2)}", timeout=5)  # stopped by rank 0
    assert (run_dir / "final" / "config.json").exists()
