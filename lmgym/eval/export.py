"""A run's results.jsonl as a Hugging Face dataset: one row per rollout.

The columns are fixed, so datasets of different runs concatenate and filter alike:

    example_id       int, or str when some id of the run is not an int
    rollout          int     index of the rollout within its example
    task             str
    prompt           str     JSON text of the prompt's chat messages
    completion       str     JSON text of every message after the prompt
    answer           str     the example's answer (JSON text when it is not a string)
    info             str     JSON text of the example's extra fields
    reward           float   null when the rollout failed
    metric_<name>    float   one column per reward function; null where a rollout has none
    error_kind       str     null when the rollout succeeded
    error_message    str
    stop_reason      str
    num_turns        int
    prompt_tokens    int
    completion_tokens int
    latency_s        float

Messages are JSON text, not Arrow structs. Arrow holds one type per column, while chat
messages vary: tool calls on some, `tool_call_id` on others, content that is null or a
list of parts. A struct column would fail on such rows, or fill every message with null
keys, so the transcript read back would not be the one written. JSON text round-trips
exactly; `json.loads(row["completion"])` gives the messages back (`messages_of` below).

Metrics are flattened into `metric_<name>` columns rather than one struct: a filter is
then `ds.filter(lambda r: r["metric_correct_answer"] == 1)` or plain SQL on the parquet
file, and an EnvGroup's metrics of different environments are simply null elsewhere.
The rollout's `state` (the environment author's objects) stays in results.jsonl only.

A torn last line of results.jsonl (a run killed mid-write) is left out, and removed from
the file, as `lmgym eval --resume` would do. Failed rollouts are rows with their error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from lmgym import errors
from lmgym.eval.results import RESULTS_FILE, dumps_line, read_results
from lmgym.types import RolloutRecord

FORMATS = ("hf", "parquet", "jsonl")
DEFAULT_OUTPUT = {"hf": "dataset", "parquet": "results.parquet", "jsonl": "dataset.jsonl"}
METRIC_PREFIX = "metric_"


def load_records(run_dir: Path) -> list[RolloutRecord]:
    """The rollout records of a run directory, torn last line dropped."""
    if not run_dir.is_dir():
        raise errors.ResultsFileError(f"{run_dir} is not a directory: give the run directory of `lmgym eval`")
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise errors.ResultsFileError(f"{run_dir} is not an lmgym run directory: {path} is missing")
    return read_results(path)


def _text(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def to_rows(records: list[RolloutRecord]) -> list[dict[str, Any]]:
    """One flat row per record, with every metric of the run as a column."""
    metrics = sorted({name for r in records for name in r.get("metrics") or {}})
    ids_are_ints = all(isinstance(r["example_id"], int) for r in records)
    rows = []
    for r in records:
        error, usage = r.get("error") or {}, r.get("usage") or {}
        row_metrics = r.get("metrics") or {}
        rows.append({
            "example_id": r["example_id"] if ids_are_ints else str(r["example_id"]),
            "rollout": r["rollout"],
            "task": r.get("task"),
            "prompt": json.dumps(r.get("prompt") or [], ensure_ascii=False),
            "completion": json.dumps(r.get("completion") or [], ensure_ascii=False),
            "answer": _text(r.get("answer")),
            "info": json.dumps(r.get("info") or {}, ensure_ascii=False, default=str),
            "reward": r.get("reward"),
            **{METRIC_PREFIX + name: row_metrics.get(name) for name in metrics},
            "error_kind": error.get("kind"),
            "error_message": error.get("message"),
            "stop_reason": r.get("stop_reason"),
            "num_turns": r.get("num_turns"),
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "latency_s": r.get("latency_s"),
        })
    return rows


def features(metric_names: list[str], ids_are_ints: bool = True):
    """The Arrow schema of the rows, explicit so that an all-null column keeps its type."""
    from datasets import Features, Value

    string, integer, number = Value("string"), Value("int64"), Value("float64")
    return Features({
        "example_id": integer if ids_are_ints else string,
        "rollout": integer,
        "task": string,
        "prompt": string,
        "completion": string,
        "answer": string,
        "info": string,
        "reward": number,
        **{METRIC_PREFIX + name: number for name in metric_names},
        "error_kind": string,
        "error_message": string,
        "stop_reason": string,
        "num_turns": integer,
        "prompt_tokens": integer,
        "completion_tokens": integer,
        "latency_s": number,
    })


def to_dataset(records: list[RolloutRecord]):
    """A `datasets.Dataset` of the records, one row each."""
    from datasets import Dataset

    rows = to_rows(records)
    metrics = sorted({name for r in records for name in r.get("metrics") or {}})
    schema = features(metrics, all(isinstance(r["example_id"], int) for r in records))
    return Dataset.from_dict({name: [row[name] for row in rows] for name in schema}, features=schema)


def messages_of(text: str) -> list[dict[str, Any]]:
    """The chat messages of a `prompt` or `completion` cell."""
    return json.loads(text)


def claim(path: Path, overwrite: bool) -> None:
    """Make room for an output at `path`; replace only what an export wrote."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        raise errors.UsageError(f"{path} already exists; pass --overwrite to replace it, or choose another -o")
    if path.is_dir():
        if any(path.iterdir()) and not (path / "dataset_info.json").is_file():
            raise errors.UsageError(f"{path} is a directory that holds no saved dataset; refusing to replace it")
        shutil.rmtree(path)
    else:
        path.unlink()


def export_run(run_dir: Path, format: str = "hf", output: Path | None = None, *, overwrite: bool = False):
    """Write the run's rollouts as a dataset; returns (dataset, output path)."""
    if format not in FORMATS:
        raise errors.UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    records = load_records(run_dir)
    output = output or run_dir / DEFAULT_OUTPUT[format]
    dataset = to_dataset(records)
    claim(output, overwrite)
    if format == "hf":
        dataset.save_to_disk(str(output))
    elif format == "parquet":
        dataset.to_parquet(str(output))
    else:
        output.write_bytes(b"".join(dumps_line(row) for row in dataset))
    return dataset, output


def hub_token() -> str:
    """The Hugging Face token, or a UsageError saying how to provide one (no network)."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise errors.UsageError("cannot push to the Hugging Face Hub: HF_HUB_OFFLINE is set")
    token = get_token()
    if not token:
        raise errors.UsageError(
            "no Hugging Face token: set HF_TOKEN, or log in with `hf auth login`, to push to the Hub"
        )
    return token


def check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise errors.UsageError(
            f"--push-to-hub {repo_id!r} is not a dataset repository id like 'user/name': {exc}"
        ) from None


def push_to_hub(dataset, repo_id: str, token: str, private: bool = False) -> None:
    """Upload `dataset` (as parquet shards) to the Hub dataset repository `repo_id`."""
    try:
        dataset.push_to_hub(repo_id, token=token, private=private)
    except Exception as exc:  # network, permissions, quota: one line, not a traceback
        raise errors.LmgymError(f"pushing to the Hub dataset {repo_id!r} failed: {type(exc).__name__}: {exc}") from None
