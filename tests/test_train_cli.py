"""`lmgym train`, `lmgym train --resume` and `lmgym sft` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--algorithm.prompts_per_step", "2", "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8",
         "--eval.every", "2", "--eval.num_examples", "10", "--sft.max_steps", "3", "--logging.console_every", "1"]


def lmgym(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmgym", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})


def steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in json.loads(line)]


def test_train_then_resume_to_more_steps(tmp_path):
    run = tmp_path / "run"
    result = lmgym("train", "configs/reverse-digits.toml", *QUICK, "--trainer.max_steps", "2",
                   "--checkpoint.every", "2", "--logging.output_dir", str(run))
    assert result.returncode == 0, result.stderr
    assert "sampled reward" in result.stdout and "greedy reward" in result.stdout and "sft   step" in result.stdout
    assert (run / "config.toml").exists() and (run / "final" / "config.json").exists()
    assert (run / "checkpoints" / "step_000002" / "state.pt").exists()
    assert steps(run) == [1, 2]
    result = lmgym("train", "--resume", str(run), "--trainer.max_steps", "3")
    assert result.returncode == 0, result.stderr
    assert steps(run) == [1, 2, 3]  # continued at step 3, nothing redone


def test_sft_saves_a_model(tmp_path):
    run = tmp_path / "sft"
    result = lmgym("sft", "configs/reverse-digits.toml", "--sft.max_steps", "2", "--logging.output_dir", str(run))
    assert result.returncode == 0, result.stderr
    assert (run / "final" / "config.json").exists()


def test_config_mistakes_are_named():
    result = lmgym("train", "configs/reverse-digits.toml", "--trainer.lrr", "1e-5")
    assert result.returncode == 2 and "did you mean 'trainer.lr'" in result.stderr
    result = lmgym("train", "configs/reverse-digits.toml", "--algorithm.group_size", "1")
    assert result.returncode == 2 and "group_size" in result.stderr
    result = lmgym("train", "configs/reverse-digits.toml", "--model.name", "no-such-model")
    assert result.returncode == 2 and "no-such-model" in result.stderr
    result = lmgym("train", "--resume", "/nonexistent/run")
    assert result.returncode == 2 and "config.toml" in result.stderr
