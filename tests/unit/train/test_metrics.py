"""Metrics sinks: JSONL lines, the console summary, fan-out, optional libraries."""

from __future__ import annotations

import importlib.util
import json
import sys
from io import StringIO

import pytest
from rich.console import Console

from lmgym.errors import UsageError
from lmgym.train.config import LoggingConfig
from lmgym.train.metrics import (
    ConsoleSink,
    JsonlSink,
    MetricsSink,
    MultiSink,
    NullSink,
    TensorBoardSink,
    WandbSink,
    make_sink,
)


def plain_console() -> tuple[Console, StringIO]:
    out = StringIO()
    return Console(file=out, width=200, color_system=None, force_terminal=False), out


class Recorder:
    def __init__(self):
        self.calls: list[tuple[int, dict]] = []
        self.closed = False

    def log(self, step, metrics, phase="rl"):
        self.calls.append((step, dict(metrics)) if phase == "rl" else (step, dict(metrics), phase))

    def close(self):
        self.closed = True


def test_null_sink_accepts_everything():
    sink = NullSink()
    sink.log(1, {"reward": 1.0})
    sink.close()
    assert isinstance(sink, MetricsSink)


def test_jsonl_sink_writes_one_flushed_line_per_step(tmp_path):
    path = tmp_path / "run" / "metrics.jsonl"
    sink = JsonlSink(path)
    sink.log(1, {"reward": 0.5, "loss": -0.25})
    # flushed before close: readable while the run goes on
    assert json.loads(path.read_text()) == {"step": 1, "reward": 0.5, "loss": -0.25}
    sink.log(2, {"reward": float("nan"), "eval/reward": 1.0})
    sink.close()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [
        {"step": 1, "reward": 0.5, "loss": -0.25},
        {"step": 2, "reward": None, "eval/reward": 1.0},
    ]
    assert list(rows[0]) == ["step", "reward", "loss"]


def test_sft_rows_count_their_own_steps(tmp_path):
    # A 60-step run after 96 SFT steps must not read as 96 steps long.
    path = tmp_path / "metrics.jsonl"
    with JsonlSink(path) as sink:
        sink.log(96, {"sft/loss": 0.5}, phase="sft")
        sink.log(0, {"eval/reward": 0.25})
        sink.log(60, {"reward": 1.0})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"sft_step": 96, "sft/loss": 0.5}, {"step": 0, "eval/reward": 0.25}, {"step": 60, "reward": 1.0}]
    assert max(row["step"] for row in rows if "step" in row) == 60


def test_jsonl_sink_creates_its_file_with_the_first_line(tmp_path):
    # A run that fails before its first step must leave no metrics.jsonl behind.
    path = tmp_path / "run" / "metrics.jsonl"
    JsonlSink(path).close()
    assert not path.exists() and not path.parent.exists()
    sink = JsonlSink(path)
    sink.close()
    with pytest.raises(ValueError, match="closed"):
        sink.log(1, {"reward": 1.0})


def test_jsonl_sink_appends(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with JsonlSink(path) as sink:
        sink.log(1, {"reward": 1.0})
    with JsonlSink(path) as sink:
        sink.log(2, {"reward": 2.0})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_jsonl_sink_converts_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "metrics.jsonl"
    with JsonlSink(path) as sink:
        sink.log(3, {"loss": torch.tensor(0.5), "tokens": 12})
    assert json.loads(path.read_text()) == {"step": 3, "loss": 0.5, "tokens": 12}


def test_console_sink_prints_selected_keys_in_a_fixed_order():
    console, out = plain_console()
    sink = ConsoleSink(console)
    sink.log(
        12,
        {
            "lr": 3e-3,
            "loss": -0.0123,
            "reward": 0.53125,
            "kl": 0.0012,
            "clip_fraction": 0.03125,
            "tokens_per_s": 1234.4,
            "not_shown": 42.0,
        },
    )
    line = out.getvalue()
    assert line.count("\n") == 1
    assert line.split() == [
        "train", "step", "12",
        "sampled", "reward", "0.531",
        "loss", "-0.0123",
        "kl", "0.0012",
        "clip", "0.031",
        "tok/s", "1,234",
        "lr", "3.00e-03",
    ]  # fmt: skip
    assert "42" not in line


def test_losses_and_kl_never_read_as_zero_unless_they_are():
    # An on-policy GRPO loss is ~1e-8 and a young KL ~1e-6: three significant digits.
    console, out = plain_console()
    ConsoleSink(console).log(1, {"loss": -7.450580624679404e-09, "kl": 3.21e-06})
    ConsoleSink(console).log(2, {"loss": 0.0, "kl": 0.25})
    first, second = out.getvalue().splitlines()
    assert first.split()[3:] == ["loss", "-7.45e-09", "kl", "3.21e-06"]
    assert second.split()[3:] == ["loss", "0", "kl", "0.25"]


def test_evaluation_gets_its_own_line_with_the_environments_metrics():
    console, out = plain_console()
    ConsoleSink(console).log(0, {"eval/errors": 0.0, "eval/reward": 0.6, "eval/exact_match": 0.55, "eval/digit_accuracy": 0.8125})
    ConsoleSink(console).log(10, {"reward": 0.5, "eval/errors": 2.0, "eval/reward": 0.7, "eval/exact_match": 2.5e-05})
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["eval", "step", "0", "greedy", "reward", "0.600", "exact_match", "0.550", "digit_accuracy", "0.812"]
    assert lines[1].split() == ["train", "step", "10", "sampled", "reward", "0.500"]
    assert lines[2].split() == ["eval", "step", "10", "greedy", "reward", "0.700", "errors", "2.000", "exact_match", "2.5e-05"]
    console, out = plain_console()
    ConsoleSink(console, eval_temperature=0.7).log(5, {"eval/reward": 0.25})
    assert out.getvalue().split() == ["eval", "step", "5", "reward", "(T=0.7)", "0.250"]


def test_sft_steps_have_their_own_line():
    console, out = plain_console()
    ConsoleSink(console).log(3, {"sft/loss": 1.2345, "sft/epoch": 0.0}, phase="sft")
    assert out.getvalue().split() == ["sft", "step", "3", "loss", "1.23"]


def flat_step(reward=0.0, flat=4.0):
    return {"reward": reward, "groups": 4.0, "groups_zero_variance": flat}


def test_a_step_whose_groups_all_have_equal_rewards_is_warned_about_once_while_it_lasts():
    console, out = plain_console()
    sink = ConsoleSink(console)
    for step, metrics in enumerate([flat_step(flat=3.0), flat_step(), flat_step(), flat_step(flat=1.0), flat_step(1.0)], start=1):
        sink.log(step, metrics)
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2 and warnings[0].startswith("warning: step 2: within every group all rollouts got the same reward (4 groups, mean reward 0.000)")
    assert "rewards teach nothing" in warnings[0] and warnings[1].startswith("warning: step 5:") and "mean reward 1.000" in warnings[1]


def test_a_tool_environment_that_makes_no_tool_calls_is_warned_about():
    console, out = plain_console()
    sink = ConsoleSink(console)
    sink.log(0, {"eval/reward": 0.0, "eval/tool_calls_per_rollout": 0.0})
    sink.log(1, {"reward": 0.0, "tool_calls_per_rollout": 0.0})
    sink.log(2, {"reward": 0.0, "tool_calls_per_rollout": 0.0, "eval/reward": 0.0, "eval/tool_calls_per_rollout": 0.0})
    sink.log(3, {"reward": 0.0, "tool_calls_per_rollout": 0.5})
    sink.log(4, {"reward": 0.0, "tool_calls_per_rollout": 0.0})
    warnings = [line for line in out.getvalue().splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: eval at step 0: the environment offers tools but no rollout called one (said once while it lasts)",
        "warning: step 1: the environment offers tools but no rollout called one (said once while it lasts)",
        "warning: step 4: the environment offers tools but no rollout called one (said once while it lasts)",
    ]


def test_console_sink_skips_missing_keys_and_aligns_columns():
    console, out = plain_console()
    sink = ConsoleSink(console)
    sink.log(1, {"reward": 0.5})
    sink.log(100, {"reward": -0.25, "loss": float("nan")})
    first, second = out.getvalue().splitlines()
    assert first.split() == ["train", "step", "1", "sampled", "reward", "0.500"]
    assert second.split() == ["train", "step", "100", "sampled", "reward", "-0.250", "loss", "nan"]
    assert first.index("reward") == second.index("reward")


def test_console_sink_every():
    console, out = plain_console()
    sink = ConsoleSink(console, every=5)
    for step in range(1, 11):
        sink.log(step, {"reward": 1.0})
    assert [line.split()[2] for line in out.getvalue().splitlines()] == ["5", "10"]
    console, out = plain_console()
    ConsoleSink(console, every=0).log(5, {"reward": 1.0})
    assert out.getvalue() == ""


def test_multi_sink_fans_out_and_closes_all():
    a, b = Recorder(), Recorder()
    sink = MultiSink([a, b])
    sink.log(1, {"reward": 1.0})
    sink.log(2, {"loss": 0.5})
    sink.log(3, {"sft/loss": 0.5}, phase="sft")
    sink.close()
    assert a.calls == b.calls == [(1, {"reward": 1.0}), (2, {"loss": 0.5}), (3, {"sft/loss": 0.5}, "sft")]
    assert a.closed and b.closed


def test_multi_sink_closes_the_rest_when_one_fails():
    class Broken(Recorder):
        def close(self):
            raise RuntimeError("boom")

    last = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        MultiSink([Broken(), last]).close()
    assert last.closed


def test_make_sink_follows_the_logging_section(tmp_path):
    sink = make_sink(LoggingConfig(console_every=0), tmp_path, {})
    assert isinstance(sink, JsonlSink) and sink.path == tmp_path / "metrics.jsonl"
    sink.close()
    sink = make_sink(LoggingConfig(jsonl=False, console_every=0), tmp_path, {})
    assert isinstance(sink, NullSink)
    sink = make_sink(LoggingConfig(console_every=2), tmp_path, {})
    assert isinstance(sink, MultiSink)
    assert [type(s) for s in sink.sinks] == [JsonlSink, ConsoleSink] and sink.sinks[1].every == 2
    sink.close()


def test_missing_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    # Simulate the library being absent, whether or not it is installed here.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UsageError, match="install tensorboard"):
        TensorBoardSink(tmp_path / "tb")
    with pytest.raises(UsageError, match="install tensorboard"):
        make_sink(LoggingConfig(tensorboard=True, console_every=0), tmp_path, {})


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_not_installed_here(tmp_path):
    with pytest.raises(UsageError, match="install tensorboard"):
        TensorBoardSink(tmp_path / "tb")


def test_missing_wandb_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UsageError, match="install wandb"):
        WandbSink("lmgym", {})


def test_the_module_installs_no_logging_handlers():
    import logging

    import lmgym.train.metrics  # noqa: F401

    assert not logging.getLogger("lmgym").handlers
    assert not logging.getLogger("lmgym.train.metrics").handlers


def test_sampled_rollouts_never_glue_onto_a_torn_line(tmp_path):
    from lmgym.train.loop import SAMPLES_FILE, write_samples

    (tmp_path / SAMPLES_FILE).write_bytes(b'{"step": 1, "rew')  # killed mid-write
    write_samples(tmp_path, 2, [{"reward": 1.0}, {"reward": 0.0}])
    lines = (tmp_path / SAMPLES_FILE).read_bytes().splitlines()
    assert lines[0] == b'{"step": 1, "rew' and [json.loads(line) for line in lines[1:]] == [
        {"reward": 1.0, "step": 2}, {"reward": 0.0, "step": 2}]
