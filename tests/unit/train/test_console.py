"""What `lmgym train` and `lmgym sft` tell the user: labelled rewards, the environment's
metrics at each evaluation, warnings when a step cannot learn, readable help; and a run
that cannot start leaves no run directory behind. (SFT and RL steps printed apart, with no
library deprecation noise, in a process of its own: tests/unit/cli/test_train.py's smoke test.)"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
# imported now: transformers' log handler keeps the stderr of its import, which must not be a
# CliRunner stream that is closed after one command
pytest.importorskip("transformers")

from cli_runner import ROOT  # noqa: E402  (tests/cli_runner.py)
from cli_runner import invoke as lmgym
from tiny_tools import save_tool_model  # noqa: E402  (tests/tiny_tools.py)

CONFIG = str(ROOT / "configs" / "reverse-digits.toml")
FAST = [
    "--algorithm.prompts_per_step", "2", "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8",
    "--eval.every", "0", "--logging.console_every", "0", "--sft.warm_start", "false", "--sft.max_steps", "1",
    "--sft.batch_size", "8", "--trainer.max_steps", "1", "--env.args", "{num_examples = 50, num_eval_examples = 10}",
]
WIDE = {"COLUMNS": "250"}


# ------------------------------------------------------------------- the training console


def test_a_tool_environment_run_labels_rewards_shows_eval_metrics_and_warns(tmp_path):
    # An untrained tiny model never calls calculator's tool and never earns a reward: both warnings.
    run = tmp_path / "run"
    model = str(save_tool_model(tmp_path / "model"))  # tiny-llama's own characters cannot write a call
    result = lmgym("train", CONFIG, *FAST, "--model.name", model, "--env.name", "calculator", "--env.args", "{}", "--trainer.max_steps", "2",
                   "--eval.every", "2", "--eval.num_examples", "4", "--logging.console_every", "1",
                   "--logging.output_dir", str(run), env=WIDE)
    assert result.returncode == 0, result.output[-3000:]
    lines = result.stdout.splitlines()
    train = [line for line in lines if line.startswith("train step")]
    evals = [line for line in lines if line.startswith("eval  step")]
    assert len(train) == 2 and all("sampled reward" in line and "loss" in line for line in train), result.stdout
    assert all(line.split()[6:9] == ["tool", "calls", "0.00"] for line in train), result.stdout  # tool environments show their calls
    assert len(evals) == 2 and all("greedy reward" in line and "correct_answer" in line for line in evals), result.stdout
    warnings = [line for line in lines if line.startswith("warning:")]
    assert any("step 1: within every group all rollouts got the same reward (2 groups" in w for w in warnings), result.stdout
    assert any("step 1: the environment offers tools but no rollout called one" in w for w in warnings), result.stdout
    assert any("eval at step 0: the environment offers tools but no rollout called one" in w for w in warnings), result.stdout
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[1]["groups"] == 2 and rows[1]["groups_zero_variance"] == 2 and rows[1]["tool_calls_per_rollout"] == 0
    assert "tool_calls" in rows[1]  # the environment's own metric of that name is kept
    assert "kl" not in rows[1]  # no reference model (beta = 0): no KL to report


def test_sft_help_shows_its_section_name():
    result = lmgym("sft", "--help")
    assert result.exit_code == 0
    assert "its [sft] section says" in result.flat, result.output


# -------------------------------------------------------------- a run that cannot start


@pytest.mark.parametrize("command", ["train", "sft"])
@pytest.mark.parametrize("bad", [["--env.name", "no-such-env"], ["--model.name", "no-such-model"]], ids=["env", "model"])
def test_a_run_that_cannot_start_leaves_no_run_directory(tmp_path, monkeypatch, command, bad):
    monkeypatch.chdir(tmp_path)
    result = lmgym(command, CONFIG, *FAST, *bad)
    assert result.exit_code == 2 and bad[1] in result.flat, result.output
    assert list((tmp_path / "runs" / command).iterdir()) == []


def test_a_named_output_dir_is_removed_when_created_for_the_run_and_kept_when_it_was_there(tmp_path):
    new = tmp_path / "new"
    result = lmgym("train", CONFIG, *FAST, "--env.name", "no-such-env", "--logging.output_dir", str(new))
    assert result.exit_code == 2 and not new.exists(), result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = lmgym("train", CONFIG, *FAST, "--env.name", "no-such-env", "--logging.output_dir", str(empty))
    assert result.exit_code == 2 and empty.is_dir(), result.output
    assert [p.name for p in empty.iterdir()] in ([], [".lock"])  # nothing of the run: a retry may use it
    result = lmgym("train", CONFIG, *FAST, "--logging.output_dir", str(empty))
    assert result.exit_code == 0, result.output


def test_a_resumed_run_that_cannot_start_keeps_its_directory(tmp_path):
    run = tmp_path / "run"
    assert lmgym("train", CONFIG, *FAST, "--checkpoint.every", "1", "--logging.output_dir", str(run)).exit_code == 0
    before = sorted(p.name for p in run.iterdir())
    result = lmgym("train", "--resume", str(run), "--env.name", "no-such-env")
    assert result.exit_code == 2 and "no-such-env" in result.flat, result.output
    assert sorted(p.name for p in run.iterdir()) == before


def test_nproc_run_with_a_bad_environment_is_refused_before_any_process_or_directory(tmp_path):
    """The launcher checks the environment's name and arguments itself: one line, at once,
    not one per rank after each has imported torch; no run directory is claimed."""
    for bad, expected in ((["--env.name", "no-such-env"], "unknown environment 'no-such-env'"),
                          (["--env.args", '{num_examples = "many"}'], "argument 'num_examples' must be int, got 'many'")):
        result = lmgym("train", CONFIG, *FAST, "--nproc", "2", *bad, cwd=tmp_path, env=WIDE)
        assert result.exit_code == 2 and result.output.count("error:") == 1 and expected in result.flat, result.output
        assert "starting 2 training processes" not in result.output
        assert not (tmp_path / "runs").exists()
