"""A training run owns its directory: a second process on a live run is refused, and a new
run never writes into another run's files. Real processes hold the locks (one forked from
this one, tests/forked.py)."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

pytest.importorskip("torch")
# imported now: transformers' log handler keeps the stderr of its import, which must not be a
# CliRunner stream that is closed after one command
pytest.importorskip("transformers")

from cli_runner import ROOT  # noqa: E402  (tests/cli_runner.py)
from cli_runner import invoke as lmgym
from forked import start_lmgym  # noqa: E402  (tests/forked.py)

from lmgym import rundir  # noqa: E402

CONFIG = str(ROOT / "configs" / "reverse-digits.toml")
FAST = [
    "--algorithm.prompts_per_step", "2", "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8",
    "--eval.every", "0", "--logging.console_every", "0", "--sft.warm_start", "false", "--sft.max_steps", "2",
    "--sft.batch_size", "8", "--env.args", "{num_examples = 50, num_eval_examples = 10}",
]


def trained_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_resume_of_a_run_a_live_process_holds_is_refused_and_works_once_it_is_killed(tmp_path):
    run = tmp_path / "run"
    live = start_lmgym("train", CONFIG, *FAST, "--trainer.max_steps", "100000", "--checkpoint.every", "1",
                       "--logging.output_dir", str(run), folder=tmp_path / "live", cwd=ROOT)
    try:
        wait_for(lambda: live.poll() is not None or any((run / "checkpoints").glob("step_*")))
        assert live.poll() is None, live.stderr[-3000:]
        steps = len(trained_steps(run))
        result = lmgym("train", "--resume", str(run), "--trainer.max_steps", str(steps + 1))
        assert result.exit_code == 2, result.output
        assert f"{run} is in use by another lmgym process (pid {live.pid})" in result.flat
        result = lmgym("train", "--resume", str(run), "--nproc", "2")  # refused before starting any process
        assert result.exit_code == 2 and f"(pid {live.pid})" in result.flat, result.output
        assert "starting 2 training processes" not in result.output
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    last = max(int(p.name.removeprefix("step_")) for p in (run / "checkpoints").glob("step_*"))
    result = lmgym("train", "--resume", str(run), "--trainer.max_steps", str(last + 1))  # the kernel released the lock
    assert result.exit_code == 0, result.output
    assert trained_steps(run) == list(range(1, last + 2))


@pytest.mark.parametrize("command", ["train", "sft"])
def test_an_output_dir_holding_another_run_is_refused_without_resume(tmp_path, command):
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    result = lmgym(command, CONFIG, *FAST, "--trainer.max_steps", "1", "--logging.output_dir", str(other))
    assert result.exit_code == 2, result.output
    assert f"{other} already holds files of another run" in result.flat
    if command == "train":
        assert f"--resume {other}" in result.flat
    assert trained_steps(other) == [1]  # untouched
    assert sorted(p.name for p in other.iterdir()) == ["metrics.jsonl"]


def test_nproc_refuses_another_runs_output_dir_before_starting_processes(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text("")
    result = lmgym("train", CONFIG, *FAST, "--nproc", "2", "--logging.output_dir", str(other))
    assert result.exit_code == 2 and "already holds files of another run" in result.flat, result.output
    assert "starting 2 training processes" not in result.output


def test_an_empty_output_dir_is_a_fresh_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = lmgym("train", CONFIG, *FAST, "--trainer.max_steps", "1", "--logging.output_dir", str(empty))
    assert result.exit_code == 0, result.output
    assert trained_steps(empty) == [1]


def test_nproc_ranks_train_in_the_directory_the_launcher_claimed(two_process_run):
    """The launcher claims runs/train/NAME and passes it on: rank 0 must not refuse it as another run's."""
    run, result = two_process_run
    assert result.returncode == 0, result.output[-3000:]
    assert run.parent.name == "train" and run.parent.parent.name == "runs"  # the one directory the launcher claimed
    assert trained_steps(run) == [1, 2] and (run / "final").is_dir()


class StoppedClock(datetime):
    """A clock that never leaves one second: every run of a sweep starts in it."""

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5)


@pytest.mark.parametrize("kind", ["train", "sft"])
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch, kind):
    from lmgym.train.config import load_config
    from lmgym.train.run_files import default_run_dir

    monkeypatch.setattr(rundir, "datetime", StoppedClock)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path(CONFIG), ["--model.name", "org/tiny"])
    first, second = default_run_dir(config, kind), default_run_dir(config, kind)
    name = f"{config.env.name}--tiny--20260102-030405"
    assert (first, second) == (Path("runs", kind, name), Path("runs", kind, f"{name}-2")) and second.is_dir()
