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

    def log(self, step, metrics):
        self.calls.append((step, dict(metrics)))

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
            "eval/reward": 0.6,
            "not_shown": 42.0,
        },
    )
    line = out.getvalue()
    assert line.count("\n") == 1
    assert line.split() == [
        "step", "12",
        "reward", "0.531",
        "loss", "-0.0123",
        "kl", "1.20e-03",
        "clip", "0.031",
        "tok/s", "1,234",
        "lr", "3.00e-03",
        "eval/reward", "0.600",
    ]  # fmt: skip
    assert "42" not in line


def test_console_sink_skips_missing_keys_and_aligns_columns():
    console, out = plain_console()
    sink = ConsoleSink(console)
    sink.log(1, {"reward": 0.5})
    sink.log(100, {"reward": -0.25, "loss": float("nan")})
    first, second = out.getvalue().splitlines()
    assert first.split() == ["step", "1", "reward", "0.500"]
    assert second.split() == ["step", "100", "reward", "-0.250", "loss", "nan"]
    assert first.index("reward") == second.index("reward")


def test_console_sink_every():
    console, out = plain_console()
    sink = ConsoleSink(console, every=5)
    for step in range(1, 11):
        sink.log(step, {"reward": 1.0})
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["5", "10"]
    console, out = plain_console()
    ConsoleSink(console, every=0).log(5, {"reward": 1.0})
    assert out.getvalue() == ""


def test_multi_sink_fans_out_and_closes_all():
    a, b = Recorder(), Recorder()
    sink = MultiSink([a, b])
    sink.log(1, {"reward": 1.0})
    sink.log(2, {"loss": 0.5})
    sink.close()
    assert a.calls == b.calls == [(1, {"reward": 1.0}), (2, {"loss": 0.5})]
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
