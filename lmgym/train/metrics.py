"""Where training metrics go: one `log(step, metrics)` call fans out to every sink.

    sink = make_sink(config.logging, run_dir, config.model_dump())
    sink.log(step, {"reward": 0.42, "loss": -0.01, "lr": 3e-3})
    sink.close()

Sinks: `JsonlSink` (run_dir/metrics.jsonl, one line per call), `ConsoleSink` (a compact
line per step), `TensorBoardSink` and `WandbSink` (optional libraries, imported only when
asked for), `MultiSink` (several at once) and `NullSink` (nothing, the default). Metric
names use `/` for groups (`eval/reward`). This module prints through rich and writes
files; it installs no logging handlers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rich.console import Console
from rich.text import Text

from lmgym.errors import UsageError
from lmgym.train.config import LoggingConfig

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


@runtime_checkable
class MetricsSink(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class _Closing:
    """`with sink:` closes it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # type: ignore[attr-defined]


class NullSink(_Closing):
    """Drops everything: the sink to use when nothing should be recorded."""

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink(_Closing):
    """Appends `{"step": step, **metrics}` as one JSON line per call, flushed at once.

    Non-finite floats are written as null so every line is strict JSON.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._file.closed:
            raise ValueError(f"JsonlSink({self.path}) is closed")
        row = {"step": int(step), **{key: _jsonable(value) for key, value in metrics.items()}}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# (metric key, label, format); a key missing from a step's metrics is left out of its line.
CONSOLE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("reward", "reward", "{:7.3f}"),
    ("loss", "loss", "{:8.4f}"),
    ("kl", "kl", "{:9.2e}"),
    ("clip_fraction", "clip", "{:5.3f}"),
    ("tokens_per_s", "tok/s", "{:7,.0f}"),
    ("lr", "lr", "{:8.2e}"),
    ("eval/reward", "eval/reward", "{:6.3f}"),
    ("sft/loss", "sft loss", "{:7.4f}"),
)


def format_console_line(step: int, metrics: Mapping[str, Any]) -> Text:
    """`step    12  reward   0.531  loss  -0.0123  ...`: fixed widths, so lines align."""
    line = Text()
    line.append("step ", style="dim")
    line.append(f"{int(step):>5}", style="bold")
    for key, label, fmt in CONSOLE_FIELDS:
        if key not in metrics:
            continue
        line.append(f"  {label} ", style="dim")
        line.append(_format_number(metrics[key], fmt))
    return line


class ConsoleSink(_Closing):
    """Prints `format_console_line` every `every` steps (0 = never) to a rich Console."""

    def __init__(self, console: Console | None = None, every: int = 1):
        self.console = console if console is not None else Console()
        self.every = every

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self.every > 0 and step % self.every == 0:
            self.console.print(format_console_line(step, metrics), soft_wrap=True, highlight=False)

    def close(self) -> None:
        pass


class TensorBoardSink(_Closing):
    """Scalars for TensorBoard under `log_dir`, via torch's SummaryWriter."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                "install tensorboard (`pip install tensorboard`) to use logging.tensorboard = true, "
                "or set logging.tensorboard = false"
            ) from None
        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            if _is_number(value):
                self._writer.add_scalar(key, float(value), global_step=int(step))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbSink(_Closing):
    """A Weights & Biases run in `project`, with the run's config attached."""

    def __init__(
        self,
        project: str,
        config: Mapping[str, Any] | None = None,
        dir: str | Path | None = None,
        name: str | None = None,
    ):
        try:
            import wandb
        except ImportError:
            raise UsageError(
                "install wandb (`pip install wandb`) to use logging.wandb = true, or set logging.wandb = false"
            ) from None
        self._run = wandb.init(
            project=project, config=dict(config or {}), dir=str(dir) if dir is not None else None, name=name
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self._run.log(dict(metrics), step=int(step))

    def close(self) -> None:
        self._run.finish()


class MultiSink(_Closing):
    """Sends every call to each sink in turn; `close` closes all, then re-raises the first error."""

    def __init__(self, sinks: Iterable[MetricsSink]):
        self.sinks = list(sinks)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, metrics)

    def close(self) -> None:
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 - close the others first
                first = first or exc
        if first is not None:
            raise first


def make_sink(
    logging_config: LoggingConfig, run_dir: Path, config_dict: Mapping[str, Any] | None = None
) -> MetricsSink:
    """The sinks `[logging]` asks for, writing under `run_dir`.

    jsonl -> run_dir/metrics.jsonl; console_every > 0 -> ConsoleSink; tensorboard ->
    run_dir/tensorboard; wandb -> a run in wandb_project with `config_dict` attached.
    """
    run_dir = Path(run_dir)
    sinks: list[MetricsSink] = []
    try:
        if logging_config.jsonl:
            sinks.append(JsonlSink(run_dir / METRICS_FILE))
        if logging_config.console_every > 0:
            sinks.append(ConsoleSink(every=logging_config.console_every))
        if logging_config.tensorboard:
            sinks.append(TensorBoardSink(run_dir / TENSORBOARD_DIR))
        if logging_config.wandb:
            sinks.append(WandbSink(logging_config.wandb_project, config_dict, dir=run_dir, name=run_dir.name))
    except BaseException:
        MultiSink(sinks).close()
        raise
    if not sinks:
        return NullSink()
    return sinks[0] if len(sinks) == 1 else MultiSink(sinks)


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, str, bytes)):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _jsonable(value: Any) -> Any:
    """Plain JSON for a metric: ints and bools as they are, numbers (tensors too) as float, NaN as null."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if _is_number(value):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


def _format_number(value: Any, fmt: str) -> str:
    if not _is_number(value):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        width = len(fmt.format(0.0))
        return f"{number!s:>{width}}"
    return fmt.format(number)
