"""Checkpoints of runs of two processes: a run interrupted after step 1 and resumed ends with
exactly the weights of the run that was not interrupted, whether sharded (`trainer.strategy
= "fsdp"`, `torch.distributed.checkpoint`) or not (ddp: rank 0 writes, holding every rank's
RNG states, since each rank samples its own rollouts); `final/` is an ordinary
transformers folder."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")

from cli_runner import assert_one_error, invoke, run_process  # noqa: E402
from records import jsonl  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from train_setups import CONFIG  # noqa: E402

SMALL_RUN = [
    "--env.args", "{num_examples = 50, num_eval_examples = 10}", "--algorithm.prompts_per_step", "2",
    "--algorithm.group_size", "8", "--trainer.micro_batch_size", "4", "--eval.every", "0", "--logging.console_every", "0",
    "--sft.max_steps", "20", "--trainer.lr", "1e-2", "--sampling.temperature", "1.0",
]  # the warm start makes the untrained model's rewards vary, so the resumed step has a gradient


def final_weights(run_dir):
    return load_file(run_dir / "final" / "model.safetensors")


@pytest.mark.slow  # two runs of two processes: about a minute each
@pytest.mark.parametrize("strategy,lora", [("fsdp", False), ("fsdp", True), ("ddp", False)], ids=["fsdp-full", "fsdp-lora", "ddp-full"])
def test_a_resumed_run_of_two_processes_ends_with_the_uninterrupted_runs_weights(tmp_path, strategy, lora):
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    extra = ["--model.lora.enabled", "true"] if lora else []
    result = run_process("train", str(CONFIG), "--nproc", "2", "--trainer.strategy", strategy, *SMALL_RUN, *extra,
                         "--trainer.max_steps", "3", "--checkpoint.every", "1", "--checkpoint.keep", "3",
                         "--logging.output_dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    step_2, step_3 = (run_dir / "checkpoints" / f"step_00000{n}" for n in (2, 3))
    if strategy == "fsdp":
        assert (step_2 / "shards" / ".metadata").exists()
    rng_by_rank = torch.load(step_2 / "state.pt", weights_only=False)["rng_by_rank"]
    assert len(rng_by_rank) == 2 and not torch.equal(rng_by_rank[0]["engine"], rng_by_rank[1]["engine"])
    uninterrupted = final_weights(run_dir)
    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")  # LoRA: merged into the base
    assert {n: p.shape for n, p in model.state_dict().items() if n in uninterrupted} == {n: p.shape for n, p in uninterrupted.items()}

    shutil.rmtree(step_3)
    shutil.rmtree(step_2)  # as if killed during step 2
    shutil.rmtree(run_dir / "final")
    result = run_process("train", "--resume", str(run_dir), "--nproc", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    rerun = [row for row in jsonl(run_dir / "metrics.jsonl") if row.get("step") in (2, 3)]
    assert len(rerun) == 2 and any(row["grad_norm"] > 0 for row in rerun)  # else any rollouts would give these weights
    resumed = final_weights(run_dir)
    worst = max(float((uninterrupted[n] - resumed[n]).abs().max()) for n in uninterrupted)
    print(f"largest difference between the resumed and the uninterrupted run: {worst:.1e}")
    assert worst == 0.0


def test_more_processes_than_prompts_is_refused_before_any_starts(tmp_path):
    result = invoke("train", str(CONFIG), "--nproc", "8", "--algorithm.prompts_per_step", "4", "--trainer.micro_batch_size", "8",
                    "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, "8 training processes for algorithm.prompts_per_step = 4", "at most 4 processes (--nproc)")
    assert "starting" not in result.output
