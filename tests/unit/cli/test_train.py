"""`lmgym train`, `lmgym train --resume` and `lmgym sft` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
# imported now: transformers' log handler keeps the stderr of its import, which must not be a
# CliRunner stream that is closed after one command
pytest.importorskip("transformers")

from cli_runner import ROOT, invoke, run_process  # noqa: E402  (tests/cli_runner.py)

QUICK = ["--algorithm.prompts_per_step", "2", "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8",
         "--eval.every", "2", "--eval.num_examples", "10", "--sft.max_steps", "3", "--logging.console_every", "1"]


def steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(line)]


def test_train_then_resume_to_more_steps(tmp_path):
    """The smoke test of `lmgym train` as its own process (a LoRA run after a warm start):
    what a user's terminal shows, warnings included (in this process pytest would catch
    them); the resume runs in this one."""
    run = tmp_path / "run"
    result = run_process("train", "configs/reverse-digits.toml", *QUICK, "--trainer.max_steps", "2", "--model.lora.enabled", "true",
                         "--checkpoint.every", "2", "--logging.output_dir", str(run), env={"COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    assert [line.split()[:3] for line in result.stdout.splitlines() if line.startswith(("sft", "train"))] == [
        ["sft", "step", "1"], ["sft", "step", "2"], ["sft", "step", "3"], ["train", "step", "1"], ["train", "step", "2"]]
    assert "sampled reward" in result.stdout and "greedy reward" in result.stdout
    for noise in ("deprecated", "Deprecation", "FutureWarning", "Warning:"):
        assert noise not in result.stderr, result.stderr[-3000:]
    assert (run / "config.toml").exists() and (run / "final" / "config.json").exists()
    assert (run / "checkpoints" / "step_000002" / "state.pt").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(row.get("sft_step"), row.get("step")) for row in rows if "sft/loss" in row or "loss" in row] == [
        (1, None), (2, None), (3, None), (None, 1), (None, 2)]
    assert steps(run) == [1, 2]
    result = invoke("train", "--resume", str(run), "--trainer.max_steps", "3", cwd=ROOT)
    assert result.returncode == 0, result.output
    assert steps(run) == [1, 2, 3]  # continued at step 3, nothing redone


def test_sft_saves_a_model(tmp_path):
    """The smoke test of `lmgym sft` as its own process."""
    run = tmp_path / "sft"
    result = run_process("sft", "configs/reverse-digits.toml", "--sft.max_steps", "2", "--logging.output_dir", str(run))
    assert result.returncode == 0, result.stderr
    assert (run / "final" / "config.json").exists()


def test_config_mistakes_are_named():
    result = invoke("train", "configs/reverse-digits.toml", "--trainer.lrr", "1e-5", cwd=ROOT)
    assert result.returncode == 2 and "did you mean 'trainer.lr'" in result.stderr
    assert "allowed keys in [trainer]: lr," in " ".join(result.stderr.split())  # brackets are text, not rich markup
    result = invoke("train", "configs/reverse-digits.toml", "--algorithm.group_size", "1", cwd=ROOT)
    assert result.returncode == 2 and "group_size" in result.stderr
    result = invoke("train", "configs/reverse-digits.toml", "--model.name", "no-such-model", cwd=ROOT)
    assert result.returncode == 2 and "no-such-model" in result.stderr
    result = invoke("train", "--resume", "/nonexistent/run", cwd=ROOT)
    assert result.returncode == 2 and "config.toml" in result.stderr
