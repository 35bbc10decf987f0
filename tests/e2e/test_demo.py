"""`lmgym demo` at a small size, as `make demo` runs it: every step's command runs, the
reports are written, and the trained model beats the untrained one on held-out examples
(the numbers are read back from the runs' own files, not from the printed table)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from cli_runner import assert_one_error, invoke, run_process  # noqa: E402

from lmgym.cli.demo import Step, StepFailed, run_step  # noqa: E402
from lmgym.eval.results import read_metadata  # noqa: E402


def test_the_demo_evaluates_trains_and_evaluates_the_trained_model_better(tmp_path):
    root = tmp_path / "demo"
    result = run_process("demo", "--no-embedded", "--train-steps", "3", "--eval-examples", "30", "-o", str(root))
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = (read_metadata(root / name)["summary"] for name in ("2-before", "4-after"))
    assert before["rollouts"] == after["rollouts"] == 30
    # Margins that hold on any CPU: the numbers are seeded, but float rounding differs between
    # processors (exact match 0.0 -> over 0.3 on the Intel cores this was written on, 0.27 on an AMD EPYC,
    # whose digit accuracy went 0.0 -> 0.74).
    assert after["metrics"]["exact_match"] > before["metrics"]["exact_match"] + 0.15
    assert after["metrics"]["digit_accuracy"] > before["metrics"]["digit_accuracy"] + 0.5
    assert read_metadata(root / "4-after")["config"]["model"] == str(root / "3-train" / "final")
    steps = [json.loads(line)["step"] for line in (root / "3-train" / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
    assert max(steps) == 3
    for name in ("2-before", "3-train", "4-after"):
        assert (root / name / "report.html").is_file() and str(root / name / "report.html") in result.stderr
    assert "step 2/3: train it" in result.stderr and "after GRPO" in result.stderr


def test_a_failed_step_stops_the_demo_naming_the_step_and_its_command(tmp_path):
    step = Step("nothing", "evaluate an environment that does not exist", ["eval", "no-such-env", "-o", str(tmp_path / "x")], tmp_path / "x")
    with pytest.raises(StepFailed, match=r"step 2/4 \(evaluate an environment that does not exist\) failed with exit code 2(.|\n)*lmgym eval no-such-env"):
        run_step(2, 4, step)


def test_a_demo_directory_holding_files_is_refused_before_anything_runs(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    result = invoke("demo", "--no-embedded", "-o", str(tmp_path))
    assert_one_error(result, str(tmp_path), "already holds files")


def test_ctrl_c_in_a_step_stops_the_demo_as_interrupted_not_failed(tmp_path, monkeypatch, capsys):
    import typer

    import lmgym.cli.demo as demo

    monkeypatch.setattr(demo, "run_lmgym", lambda args: 130)  # what a command returns after Ctrl-C
    step = Step("train", "train it", ["train", "x"], tmp_path / "3-train")
    with pytest.raises(typer.Exit) as stopped:
        run_step(3, 4, step)
    assert stopped.value.exit_code == 130
    assert "demo interrupted at step 3/4" in " ".join(capsys.readouterr().err.split())
