"""Resuming `lmgym train` after a kill: torn SFT saves and checkpoints, and logs without
repeated or lost steps. Kills are real (SIGKILL of a training process forked from this one,
tests/forked.py); runs that are not killed, resumes included, run in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
# imported now: transformers' log handler keeps the stderr of its import, which must not be a
# CliRunner stream that is closed after one command
pytest.importorskip("transformers")

from cli_runner import ROOT, invoke  # noqa: E402  (tests/cli_runner.py)
from forked import killed_around, run_lmgym  # noqa: E402  (tests/forked.py)
from safetensors.torch import load_file  # noqa: E402

CONFIG = str(ROOT / "configs" / "reverse-digits.toml")
FAST = [
    "--algorithm.prompts_per_step", "2", "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8",
    "--eval.every", "0", "--logging.console_every", "0", "--sft.max_steps", "3",
    "--env.args", "{num_examples = 50, num_eval_examples = 10}",
]

def lmgym(*args: str):
    """`lmgym ARGS` in this process, from the repository root."""
    return invoke(*args, cwd=ROOT, env={"COLUMNS": "200"})


def rows(run: Path, name: str = "metrics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines()]


def rl_steps(run: Path) -> list[int]:
    return [r["step"] for r in rows(run) if "loss" in r]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_kill_while_the_warm_start_saves_its_model_leaves_a_resumable_run(tmp_path):
    run = tmp_path / "run"
    # killed inside the SFT model's save: config.json is written, the weights not yet
    died = run_lmgym("train", CONFIG, *FAST, "--trainer.max_steps", "2", "--logging.output_dir", str(run), folder=tmp_path / "killed",
                     cwd=ROOT, before=killed_around("transformers.modeling_utils:safe_save_file", "before", lambda args: True))
    assert died.returncode == -9, died.stderr[-3000:]
    assert not (run / "sft_model").exists()  # the torn save is not where a resume looks
    sft_rows_before = [r for r in rows(run) if "sft/loss" in r]
    assert len(sft_rows_before) == 3

    result = lmgym("train", "--resume", str(run))
    assert result.returncode == 0, result.output[-3000:]
    assert (run / "sft_model" / "model.safetensors").exists() and (run / "final" / "config.json").exists()
    assert [r["sft_step"] for r in rows(run) if "sft/loss" in r] == [1, 2, 3]  # the warm start ran again, logged once
    assert rl_steps(run) == [1, 2]


def test_resume_redoes_a_warm_start_whose_saved_model_is_torn(tmp_path):
    """A run directory from before atomic saves: sft_model holds only config.json."""
    run = tmp_path / "run"
    result = lmgym("train", CONFIG, *FAST, "--trainer.max_steps", "2", "--checkpoint.every", "0", "--logging.output_dir", str(run))
    assert result.returncode == 0, result.output[-3000:]
    (run / "final").rename(tmp_path / "uninterrupted")
    losses = [r.get("loss", r.get("sft/loss")) for r in rows(run)]
    for part in (run / "sft_model").iterdir():
        if part.name != "config.json":
            part.unlink()

    result = lmgym("train", "--resume", str(run))
    assert result.returncode == 0, result.output[-3000:]
    assert "sft_model cannot be read" in result.stderr
    assert [r.get("loss", r.get("sft/loss")) for r in rows(run)] == losses  # logged once, same values
    assert_same_weights(run / "final", tmp_path / "uninterrupted")


def test_resume_falls_back_to_the_previous_checkpoint_and_logs_rerun_steps_once(tmp_path):
    run = tmp_path / "run"
    args = [*FAST, "--sft.warm_start", "false", "--trainer.max_steps", "4", "--checkpoint.every", "2", "--logging.samples_per_step", "2"]
    result = lmgym("train", CONFIG, *args, "--logging.output_dir", str(run))
    assert result.returncode == 0, result.output[-3000:]
    (run / "final").rename(tmp_path / "uninterrupted")
    newest = run / "checkpoints" / "step_000004" / "state.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a disk that lost its tail

    result = lmgym("train", "--resume", str(run))  # from step 2: steps 3 and 4 run again
    assert result.returncode == 0, result.output[-3000:]
    assert f"{newest}: cannot be read" in result.stderr
    assert rl_steps(run) == [1, 2, 3, 4]
    assert [r["step"] for r in rows(run, "samples.jsonl")] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert_same_weights(run / "final", tmp_path / "uninterrupted")


def test_a_kill_just_after_a_checkpoint_is_published_loses_no_step(tmp_path):
    run = tmp_path / "run"
    args = [*FAST, "--sft.warm_start", "false", "--checkpoint.every", "2", "--trainer.max_steps", "3"]
    died = run_lmgym("train", CONFIG, *args, "--logging.output_dir", str(run), folder=tmp_path / "killed", cwd=ROOT,
                     before=killed_around("lmgym.train.checkpoint:save_checkpoint", "after", lambda args: args[1] == 2))
    assert died.returncode == -9, died.stderr[-3000:]
    assert (run / "checkpoints" / "step_000002").is_dir()

    result = lmgym("train", "--resume", str(run))
    assert result.returncode == 0, result.output[-3000:]
    assert rl_steps(run) == [1, 2, 3]
    assert [r["step"] for r in rows(run, "samples.jsonl")] == [1, 1, 2, 2, 3, 3]


def test_a_resumed_warm_start_reloads_with_the_runs_model_options(tmp_path):
    """sft_model/ is reloaded as the run loaded its model (its code, its attention kernel),
    not with the defaults: a remote-code model would not load, and would be trained again."""
    from lmgym.train.config import load_config
    from lmgym.train.models import load_model, save_model
    from lmgym.train.session import load_sft_model

    save_model(*load_model("tiny-llama"), tmp_path / "sft_model")
    options = load_config(CONFIG, ["model.attn_implementation=eager"]).model.saved_load_options()
    assert options == {"trust_remote_code": False, "attn_implementation": "eager"}
    model, _, _ = load_sft_model(tmp_path / "sft_model", options)
    assert model.config._attn_implementation == "eager"
    model, _, _ = load_sft_model(tmp_path / "sft_model", {})
    assert model.config._attn_implementation != "eager"
