"""`lmgym view`: one self-contained HTML report of a run directory.

    path = write_report(Path("runs/eval/arithmetic--gpt-4o--20260101-120000"))  # RUN_DIR/report.html

The report is one file that opens offline: the run's data is embedded as JSON in a
`<script type="application/json">` tag and drawn by a small vanilla script
(`report_assets/report.js`; no library, no CDN, no request of any kind). Python prepares
everything that is computed once (summary, histogram bins, row flags, curves); the browser
only draws, filters, sorts and paginates. What a report shows:

- an eval run (`results.jsonl`, `metadata.json`): the summary of `lmgym.eval.summary`, a
  reward histogram and one per metric, a table of rollouts (100 rows a page, sortable,
  filters for errored, truncated and zero-reward rollouts, a text search) and each
  rollout's transcript, built only when its row is opened: roles, tool calls and tool
  results, `<think>` reasoning folded in a closed `<details>`.
- a training run (`metrics.jsonl`, `config.toml`): reward, loss, KL and tokens/s over
  steps, every other metric on demand, and the config; a dashed line marks the step
  where each live-audit finding started. Sampled rollouts of a training
  run would be read from `samples.jsonl` (results.jsonl records plus a `step` key); the
  trainer saves none today, so training reports have curves only.

Size: messages that rollouts share (system prompts, the common prompt of an example's R
rollouts) are stored once, and any string longer than `max_chars` is cut with a note
saying how much is missing. Safety: model text reaches the page only through
`textContent`, and every `<` of the embedded JSON is written `\\u003c`, so no transcript
can close the script tag.

The viewer writes nothing but the report: `read_results` repairs a torn results file in
place (os.replace), which would race a live `lmgym eval` (its writer would go on
appending to the replaced file), so records are read from a private copy.
"""

from __future__ import annotations

import html
import math
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

import lmgym
from lmgym.errors import ResultsFileError
from lmgym.eval.results import METADATA_FILE, RESULTS_FILE, is_finite_number, read_jsonl, read_results
from lmgym.eval.summary import Summary
from lmgym.types import RolloutRecord

# As lmgym.train.metrics.METRICS_FILE and lmgym.train.run_files.CONFIG_FILE, which this layer
# may not import (lmgym.train is above it).
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
SAMPLES_FILE = "samples.jsonl"
REPORT_FILE = "report.html"
MAX_CHARS = 20_000
HISTOGRAM_BINS = 20
# Training charts drawn open, as (title, metric keys); every other metric is one click away.
MAIN_CURVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward", "eval/reward")),
    ("loss", ("loss",)),
    ("KL", ("kl",)),
    ("tokens/s", ("tokens_per_s",)),
    ("SFT loss", ("sft/loss",)),
)
_PLACEHOLDER = re.compile(r"\{\{(TITLE|CSS|JS|DATA)\}\}")


# -- reading a run directory -----------------------------------------------------------------
def read_run_records(run_dir: Path) -> list[dict[str, Any]]:
    """The rollouts of results.jsonl, through `read_results` on a copy (see the docstring)."""
    path = run_dir / RESULTS_FILE
    if not path.exists():
        return []
    with tempfile.TemporaryDirectory(prefix="lmgym-view-") as tmp:
        copy = Path(tmp) / RESULTS_FILE
        shutil.copyfile(path, copy)
        try:
            return read_results(copy)
        except ResultsFileError as exc:  # name the user's file, not the copy
            raise ResultsFileError(str(exc).replace(str(copy), str(path))) from None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise ResultsFileError(f"{path} is not valid JSON: {exc}") from None


# -- preparing the data ----------------------------------------------------------------------
class Clipper:
    """Cuts strings longer than `max_chars`, anywhere in a JSON value, and counts the cuts."""

    def __init__(self, max_chars: int = MAX_CHARS):
        self.max_chars = max_chars
        self.cuts = 0

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) <= self.max_chars:
                return value
            self.cuts += 1
            missing = len(value) - self.max_chars
            return f"{value[: self.max_chars]}\n… [{missing:,} more characters not in this report; see the run's files]"
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        return value


class MessageTable:
    """Each distinct message once; rollouts refer to messages by index."""

    def __init__(self, clip: Clipper):
        self.clip = clip
        self.messages: list[Any] = []
        self._index: dict[bytes, int] = {}

    def add(self, message: Any) -> int:
        key = orjson.dumps(message, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.messages)
            # no string in it can be longer than its JSON, so most messages skip the walk
            self.messages.append(message if len(key) <= self.clip.max_chars else self.clip(message))
        return index


def is_truncated(record: dict[str, Any]) -> bool:
    """Cut short: the last reply hit the token limit (finish_reason "length"), or the
    episode hit the turn limit (stop_reason "max_turns")."""
    return record.get("finish_reason") == "length" or record.get("stop_reason") == "max_turns"


def _number(value: Any) -> float | None:
    return float(value) if is_finite_number(value) else None


def _json_text(value: Any, clip: Clipper) -> str | None:
    if value is None or value == {} or value == "":
        return None
    if isinstance(value, str):
        return clip(value)
    return clip(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str).decode())  # indented on the page


def _metric(value: Any, clip: Clipper) -> float | str | None:
    """A metric as the table shows it: a finite number, or the text of anything else (a
    string, a list, a boolean), which is shown but never summarised or drawn."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return _number(value)
    return _json_text(value, clip)


def rollout_row(record: RolloutRecord, messages: MessageTable) -> dict[str, Any]:
    """One table row: what the table shows and sorts on, and indices into the message table."""
    error = record.get("error")
    reward = None if error else _number(record.get("reward"))
    usage = record.get("usage") or {}
    prompt = record.get("prompt") or []
    completion = record.get("completion") or []
    if isinstance(prompt, str):  # a bare-string prompt, from a hand-made record
        prompt = [{"role": "user", "content": prompt}]
    clip = messages.clip
    return {
        "example_id": record.get("example_id"),
        "rollout": record.get("rollout"),
        "step": record.get("step"),
        "task": record.get("task"),
        "reward": reward,
        "metrics": {k: _metric(v, clip) for k, v in (record.get("metrics") or {}).items()},
        "error": {"kind": str(error.get("kind")), "message": clip(str(error.get("message", "")))} if error else None,
        "stop_reason": record.get("stop_reason"),
        "finish_reason": record.get("finish_reason"),
        "num_turns": record.get("num_turns"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "latency_s": _number(record.get("latency_s")),
        "errored": bool(error),
        "truncated": is_truncated(record),
        "zero_reward": reward == 0.0,
        "prompt_len": len(prompt),
        "messages": [messages.add(m) for m in [*prompt, *completion]],
        "answer": _json_text(record.get("answer"), clip),
        "info": _json_text(record.get("info"), clip),
        "state": _json_text(record.get("state"), clip),
    }


def histogram(values: Iterable[float | None], max_bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Counts for a bar chart. At most `max_bins` distinct values (rewards are often 0/1, or
    a few fractions) get one bar each; more get `max_bins` equal-width bins from min to max,
    the last bin closed. None and non-finite values are left out."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"n": 0, "discrete": True, "bins": [], "mean": None, "min": None, "max": None}
    counts = Counter(finite)
    low, high = min(finite), max(finite)
    if len(counts) <= max_bins:
        bins = [{"lo": v, "hi": v, "count": counts[v]} for v in sorted(counts)]
        discrete = True
    else:
        width = (high - low) / max_bins
        tally = [0] * max_bins
        for value, count in counts.items():
            tally[min(int((value - low) / width), max_bins - 1)] += count
        bins = [{"lo": low + i * width, "hi": low + (i + 1) * width, "count": c} for i, c in enumerate(tally)]
        discrete = False
    return {"n": len(finite), "discrete": discrete, "bins": bins, "mean": sum(finite) / len(finite), "min": low, "max": high}


def distributions(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The reward histogram and one per metric with numbers, over scored (not errored)
    rollouts; a metric's values that are text (see `_metric`) are left out."""
    scored = [r for r in rows if not r["errored"]]
    numbers = [{k: v for k, v in r["metrics"].items() if isinstance(v, float)} for r in scored]
    names = sorted({name for metrics in numbers for name in metrics})
    return {
        "reward": histogram(r["reward"] for r in scored),
        "metrics": {name: histogram(metrics.get(name) for metrics in numbers) for name in names},
    }


STEP_KEYS = ("step", "sft_step")  # an RL row, an SFT warm-start row (lmgym.train.metrics)
AUDIT_ONSET = "audit/onset/"  # lmgym.train.live_audit.ONSET_PREFIX: the step a finding first appeared


def _row_step(row: dict[str, Any]) -> tuple[str, int] | None:
    for key in STEP_KEYS:
        step = row.get(key)
        if isinstance(step, int) and not isinstance(step, bool):
            return key, step
    return None


def curves(metric_rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Per-metric series [[step, value], ...] sorted by step: RL metrics against `step`, SFT
    ones against `sft_step`. A step logged twice (a resumed run repeats the steps after its
    checkpoint) keeps its last value; non-numbers are dropped. "Last step" counts RL steps
    (SFT steps when the run had none). `marks`: the steps where the live audit first
    reported each finding (`audit/onset/<check>`), drawn on every curve."""
    series: dict[str, dict[int, float | None]] = {}
    last: dict[str, int] = {}
    marks: dict[str, int] = {}
    for row in metric_rows:
        found = _row_step(row)
        if found is None:
            continue
        step_key, step = found
        for key, value in row.items():
            if key.startswith(AUDIT_ONSET):  # a live-audit finding's first step: a mark, not a curve
                marks[key.removeprefix(AUDIT_ONSET)] = step
                continue
            if key in STEP_KEYS or (value is not None and _number(value) is None):
                continue
            series.setdefault(key, {})[step] = _number(value)
            last[step_key] = max(last.get(step_key, step), step)
    if not series:
        return None
    points = {key: [[step, value] for step, value in sorted(values.items())] for key, values in sorted(series.items())}
    main = [{"title": title, "keys": [k for k in keys if k in points]} for title, keys in MAIN_CURVES]
    main = [chart for chart in main if chart["keys"]]
    shown = {k for chart in main for k in chart["keys"]}
    return {
        "series": points,
        "main": main,
        "others": [k for k in points if k not in shown],
        "last": {k: v[-1][1] for k, v in points.items()},
        "steps": last.get("step", last.get("sft_step")),
        "marks": [{"step": step, "check": check} for check, step in sorted(marks.items(), key=lambda m: (m[1], m[0]))],
    }


def unrewarded(record: dict[str, Any]) -> bool:
    """Neither an error nor a numeric reward (a null or text reward, in a hand-made or
    foreign results file): shown as missing, left out of the summary."""
    return not record.get("error") and _number(record.get("reward")) is None


def _summary(records: Sequence[dict[str, Any]], config: dict[str, Any]) -> dict[str, Any] | None:
    records = [r for r in records if not unrewarded(r)]
    if not records:
        return None
    threshold = config.get("pass_threshold")
    summary = Summary(1.0 if threshold is None else threshold, config.get("price_input"), config.get("price_output"),
                      pass_metric=config.get("pass_metric") or "reward")
    for record in records:
        summary.add(record)  # numbers only: a text metric is shown in the table, not averaged
    return summary.to_dict()


def report_data(run_dir: Path, *, max_chars: int = MAX_CHARS) -> dict[str, Any]:
    """Everything the page shows, as one JSON-able dict. Raises ResultsFileError when the
    directory holds neither rollouts nor training metrics."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsFileError(f"{run_dir} is not a directory")
    found = {name: (run_dir / name).exists() for name in (RESULTS_FILE, SAMPLES_FILE, METRICS_FILE)}
    if not any(found.values()):
        raise ResultsFileError(
            f"{run_dir} has neither {RESULTS_FILE} (written by `lmgym eval`) nor {METRICS_FILE} "
            f"(written by `lmgym train` with logging.jsonl = true): nothing to report"
        )
    metadata = _read_json(run_dir / METADATA_FILE) or {}
    config = metadata.get("config") or {}
    records = read_run_records(run_dir)
    samples = read_jsonl(run_dir / SAMPLES_FILE)
    clip = Clipper(max_chars)
    messages = MessageTable(clip)
    rows = [rollout_row(r, messages) for r in [*records, *samples]]
    config_path = run_dir / CONFIG_FILE
    metric_rows = read_jsonl(run_dir / METRICS_FILE)
    notes = []
    if found[RESULTS_FILE] and not records:
        notes.append(f"{RESULTS_FILE} holds no rollouts yet.")
    if found[METRICS_FILE] and not metric_rows:
        notes.append(f"{METRICS_FILE} holds no steps yet.")
    if metric_rows and not samples:
        notes.append("This training run saved no sampled rollouts, so only its curves are shown.")
    if missing := sum(map(unrewarded, records)):
        notes.append(f"{missing:,} rollouts have no error and no numeric reward: their reward shows as missing (–), and the summary leaves them out.")
    if clip.cuts:
        notes.append(f"{clip.cuts:,} strings longer than {max_chars:,} characters were cut short; the run's files hold them whole.")
    title = " × ".join(str(config[k]) for k in ("env", "model") if config.get(k)) or run_dir.resolve().name
    return {
        "title": title,
        "run_dir": str(run_dir),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lmgym_version": lmgym.__version__,
        "metadata": {k: v for k, v in metadata.items() if k != "summary"} or None,
        "config_text": clip(config_path.read_text(errors="replace")) if config_path.exists() else None,
        "summary": _summary(records, config),
        "distributions": distributions(rows) if rows else None,
        "metric_names": sorted({name for r in rows for name in r["metrics"]}),
        "rows": rows,
        "messages": messages.messages,
        "curves": curves(metric_rows),
        "notes": notes,
    }


# -- the page --------------------------------------------------------------------------------
def embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: every `<` becomes \\u003c (only strings hold one),
    so `</script>` or `<!--` in a transcript cannot end or confuse the element."""
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS, default=str).decode().replace("<", "\\u003c")


def _asset(name: str) -> str:
    return resources.files("lmgym.eval").joinpath("report_assets", name).read_text(encoding="utf-8")


def render_html(data: dict[str, Any]) -> str:
    parts = {
        "TITLE": html.escape(f"lmgym report: {data['title']}"),
        "CSS": _asset("report.css"),
        "JS": _asset("report.js"),
        "DATA": embed_json(data),
    }
    # one pass, so text put in by one placeholder is never read as another
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _asset("report.html"))


def build_report(run_dir: Path, *, max_chars: int = MAX_CHARS) -> str:
    return render_html(report_data(run_dir, max_chars=max_chars))


def write_report(run_dir: Path, output: Path | None = None, *, max_chars: int = MAX_CHARS) -> Path:
    """Build the report of `run_dir` and write it to `output` (default RUN_DIR/report.html)."""
    output = Path(output) if output is not None else Path(run_dir) / REPORT_FILE
    text = build_report(Path(run_dir), max_chars=max_chars)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return output
