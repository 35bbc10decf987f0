"""Where training metrics go: one `log(step, metrics)` call fans out to every sink.

    sink = make_sink(config.logging, run_dir, config.model_dump())
    sink.log(step, {"reward": 0.42, "loss": -0.01, "lr": 3e-3})
    sink.log(3, {"sft/loss": 1.25}, phase="sft")
    sink.close()

Sinks: `JsonlSink` (run_dir/metrics.jsonl, one line per call), `ConsoleSink` (a compact
line per step, warnings when a step cannot learn), `TensorBoardSink` and `WandbSink`
(optional libraries, imported only when asked for), `MultiSink` (several at once) and
`NullSink` (nothing, the default). Metric names use `/` for groups (`eval/reward`).

SFT steps and RL steps are counted apart (`PHASES`): a row of the SFT warm start is
`{"sft_step": 3, ...}` and a row of RL `{"step": 3, ...}`, so a reader of metrics.jsonl
never takes the last SFT step for the length of the RL run. This module prints through
rich and writes files; it installs no logging handlers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from lmgym.errors import UsageError
from lmgym.train.config import LoggingConfig

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PHASES = {"rl": "step", "sft": "sft_step"}  # phase -> the key of its step in metrics.jsonl


@runtime_checkable
class MetricsSink(Protocol):
    def log(self, step: int, metrics: dict[str, float], phase: str = "rl") -> None: ...

    def close(self) -> None: ...


class _Closing:
    """`with sink:` closes it."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # type: ignore[attr-defined]


class NullSink(_Closing):
    """Drops everything: the sink to use when nothing should be recorded."""

    def log(self, step: int, metrics: dict[str, float], phase: str = "rl") -> None:
        pass

    def close(self) -> None:
        pass


class JsonlSink(_Closing):
    """Appends `{"step": step, **metrics}` (`{"sft_step": ...}` for SFT) as one JSON line
    per call, flushed at once. Non-finite floats are written as null so every line is
    strict JSON. The file is created by the first line, so a run that fails before
    logging anything leaves none."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file: TextIO | None = None
        self._closed = False

    def log(self, step: int, metrics: dict[str, float], phase: str = "rl") -> None:
        if self._closed:
            raise ValueError(f"JsonlSink({self.path}) is closed")
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        row = {PHASES[phase]: int(step), **{key: _jsonable(value) for key, value in metrics.items()}}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()


# (metric key, label, format) of a training step's line; a key missing from a step's
# metrics is left out. Losses and KL get three significant digits: a loss of -7e-09 (an
# on-policy GRPO step) must not read as 0.
SIGNIFICANT = "{:>9.3g}"
CONSOLE_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("reward", "sampled reward", "{:6.3f}"),
    ("tool_calls_per_rollout", "tool calls", "{:5.2f}"),  # tool environments only
    ("loss", "loss", SIGNIFICANT),
    ("kl", "kl", SIGNIFICANT),
    ("clip_fraction", "clip", "{:5.3f}"),
    ("tokens_per_s", "tok/s", "{:7,.0f}"),
    ("lr", "lr", "{:8.2e}"),
)
EVAL_PREFIX = "eval/"


def format_console_line(step: int, metrics: Mapping[str, Any]) -> Text:
    """`train step    12  sampled reward  0.531  loss -0.0123 ...`: fixed widths, so lines align."""
    line = _step_prefix("train", step)
    for key, label, fmt in CONSOLE_FIELDS:
        if key not in metrics:
            continue
        line.append(f"  {label} ", style="dim")
        line.append(_format_number(metrics[key], fmt))
    return line


def format_eval_line(step: int, metrics: Mapping[str, Any], temperature: float = 0.0) -> Text:
    """`eval  step    10  greedy reward  0.600  exact_match 0.600 ...`: the held-out reward,
    labelled by how it was sampled, then every metric of the environment's rubric."""
    line = _step_prefix("eval", step)
    label = "greedy reward" if temperature == 0 else f"reward (T={temperature:g})"
    line.append(f"  {label} ", style="dim")
    line.append(_format_number(metrics.get(EVAL_PREFIX + "reward", float("nan")), "{:6.3f}"))
    for key, value in metrics.items():
        name = key.removeprefix(EVAL_PREFIX)
        if not key.startswith(EVAL_PREFIX) or name == "reward" or (name == "errors" and value == 0):
            continue
        line.append(f"  {name} ", style="dim")
        line.append(_format_metric(value))
    return line


def format_sft_line(step: int, metrics: Mapping[str, Any]) -> Text:
    """`sft   step     3  loss      1.25`."""
    line = _step_prefix("sft", step)
    line.append("  loss ", style="dim")
    line.append(_format_number(metrics.get("sft/loss", float("nan")), SIGNIFICANT))
    return line


def _count(number: float, noun: str) -> str:
    return f"{float(number):g} {noun}{'' if number == 1 else 's'}"


def _step_prefix(phase: str, step: int) -> Text:
    line = Text()
    line.append(f"{phase:<5} step ", style="dim")
    line.append(f"{int(step):>5}", style="bold")
    return line


def step_warnings(step: int, metrics: Mapping[str, Any]) -> dict[str, str | None]:
    """Conditions under which a step cannot teach what the user expects: kind -> the
    warning, or None when the row shows the condition is not met. Kinds the row says
    nothing about (no evaluation at this step) are left out."""
    warnings: dict[str, str | None] = {}
    groups = metrics.get("groups")
    if _is_number(groups) and groups > 0:
        flat = metrics.get("groups_zero_variance") == groups
        warnings["zero_variance"] = (
            f"step {step}: within every group all rollouts got the same reward ({_count(groups, 'group')}, mean "
            f"reward {float(metrics.get('reward', 0.0)):.3f}): every advantage is 0, so the rewards teach nothing; "
            f"the task may be too hard or too easy for the policy (try an SFT warm start, a larger group_size or "
            f"a higher sampling.temperature)"
        ) if flat else None
    for prefix, what in (("", f"step {step}"), (EVAL_PREFIX, f"eval at step {step}")):
        calls = metrics.get(prefix + "tool_calls_per_rollout")
        if calls is not None:
            warnings[prefix + "no_tool_calls"] = f"{what}: the environment offers tools but no rollout called one" if calls == 0 else None
    return warnings


class ConsoleSink(_Closing):
    """Prints a line per `every` steps (0 = never): training, evaluation and SFT steps
    each in their own format, and a warning when a step cannot learn. A warning is
    printed when its condition starts, not again while it lasts."""

    def __init__(self, console: Console | None = None, every: int = 1, eval_temperature: float = 0.0):
        self.console = console if console is not None else Console()
        self.every = every
        self.eval_temperature = eval_temperature
        self._active: set[str] = set()

    def log(self, step: int, metrics: dict[str, float], phase: str = "rl") -> None:
        if self.every <= 0:
            return
        if phase == "sft":
            if step % self.every == 0:
                self._print(format_sft_line(step, metrics))
            return
        if step % self.every == 0 and any(key in metrics for key, _, _ in CONSOLE_FIELDS):
            self._print(format_console_line(step, metrics))
        if any(key.startswith(EVAL_PREFIX) for key in metrics):
            self._print(format_eval_line(step, metrics, self.eval_temperature))
        for kind, warning in step_warnings(step, metrics).items():
            if warning is None:
                self._active.discard(kind)
            elif kind not in self._active:
                self._active.add(kind)
                self.console.print(f"[yellow]warning:[/] {escape(warning)} (said once while it lasts)", soft_wrap=True, highlight=False)

    def _print(self, line: Text) -> None:
        self.console.print(line, soft_wrap=True, highlight=False)

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

    def log(self, step: int, metrics: dict[str, float], phase: str = "rl") -> None:
        for key, value in metrics.items():  # SFT keys are sft/..., so their own charts, against SFT steps
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
        # wandb's own step only grows, and RL restarts at 0 after the SFT warm start: so
        # rows carry their phase's step as a metric, and sft/* charts are drawn against it.
        self._run.define_metric(PHASES["sft"])
        self._run.define_metric("sft/*", step_metric=PHASES["sft"])

    def log(self, step: int, metrics: dict[str, float], phase: str = "rl") -> None:
        self._run.log({**metrics, PHASES[phase]: int(step)})

    def close(self) -> None:
        self._run.finish()


class MultiSink(_Closing):
    """Sends every call to each sink in turn; `close` closes all, then re-raises the first error."""

    def __init__(self, sinks: Iterable[MetricsSink]):
        self.sinks = list(sinks)

    def log(self, step: int, metrics: dict[str, float], phase: str = "rl") -> None:
        for sink in self.sinks:
            sink.log(step, metrics, phase)

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
    logging_config: LoggingConfig, run_dir: Path, config_dict: Mapping[str, Any] | None = None, *, eval_temperature: float = 0.0
) -> MetricsSink:
    """The sinks `[logging]` asks for, writing under `run_dir`.

    jsonl -> run_dir/metrics.jsonl; console_every > 0 -> ConsoleSink (labelling the
    evaluation's reward by `eval_temperature`); tensorboard -> run_dir/tensorboard;
    wandb -> a run in wandb_project with `config_dict` attached.
    """
    run_dir = Path(run_dir)
    sinks: list[MetricsSink] = []
    try:
        if logging_config.jsonl:
            sinks.append(JsonlSink(run_dir / METRICS_FILE))
        if logging_config.console_every > 0:
            sinks.append(ConsoleSink(every=logging_config.console_every, eval_temperature=eval_temperature))
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


def _format_metric(value: Any) -> str:
    """A rubric metric: three decimals as rewards are shown, three significant digits
    when that would hide it (1.2e-05) or be too long (1.23e+06)."""
    if _is_number(value) and math.isfinite(float(value)):
        number = float(value)
        return f"{number:.3f}" if number == 0 or 1e-3 <= abs(number) < 1e4 else f"{number:.3g}"
    return _format_number(value, "{}")


def _format_number(value: Any, fmt: str) -> str:
    if not _is_number(value):
        return str(value)
    number = float(value)
    if not math.isfinite(number):
        width = len(fmt.format(0.0))
        return f"{number!s:>{width}}"
    return fmt.format(number)
