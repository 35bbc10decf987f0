"""Kept traces as dataset rows (sft and env), written and read back as JSONL, parquet or
a `datasets` folder.

Its own module because `lmgym distill` writes its rows the same way, and the replay
environment reads them back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson

from lmgym import errors
from lmgym.eval.export import claim
from lmgym.flywheel.traces.messages import clean_message, tools_text
from lmgym.flywheel.traces.read import Selected

FORMATS = ("jsonl", "hf", "parquet")


def sft_row(item: Selected) -> dict[str, Any]:
    trace = item.trace
    row = {
        "prompt": item.prompt,
        "completion": [item.completion],
        "trace_id": trace.get("id"),
        "session_id": trace.get("session_id"),
        "model": (trace.get("response") or {}).get("model") or trace["request"].get("model"),
        "tools": tools_text(item.tools),
        "finish_reason": (trace.get("response") or {}).get("finish_reason"),
        "started_at": trace.get("started_at"),
    }
    if item.reward is not None:
        row["reward"] = item.reward
    return row


def env_row(item: Selected) -> dict[str, Any]:
    from lmgym.rubrics.judge import render_transcript

    sft = sft_row(item)
    calls = item.completion.get("tool_calls")
    info = {k: sft[k] for k in ("trace_id", "session_id", "model", "tools", "finish_reason")}
    info.update(tool_calls=tools_text(calls), reference=render_transcript([item.completion]), reward=item.reward,
                reasoning_content=item.completion.get("reasoning_content"))
    return {"id": sft["trace_id"], "prompt": item.prompt, "answer": item.completion.get("content") or "", "info": info}


def output_format(out: Path, format: str | None = None) -> str:
    """The format asked for, else by suffix: .jsonl, .parquet, anything else a HF folder."""
    if format is not None:
        if format not in FORMATS:
            raise errors.UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        return format
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(out.suffix.lower(), "hf")


def save_rows(rows: Sequence[Mapping[str, Any]], out: Path, format: str, *, overwrite: bool = False) -> Path:
    """Write rows as JSONL, a parquet file, or a `datasets` folder (`load_from_disk`)."""
    if not rows:
        raise errors.UsageError("no rows to write")
    claim(out, overwrite)
    if format == "jsonl":
        option = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
        out.write_bytes(b"".join(orjson.dumps(row, option=option, default=str) for row in rows))
        return out
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    try:
        dataset = Dataset.from_list([dict(row) for row in rows])
    except (TypeError, ValueError) as exc:  # pyarrow's ArrowTypeError and ArrowInvalid
        found = mixed_column(rows)
        raise errors.UsageError(
            f"cannot write {out} as {format}: {found or str(exc).splitlines()[0]}; Arrow needs one type per "
            "column: write a .jsonl file, which keeps each row as it is"
        ) from None
    if format == "parquet":
        dataset.to_parquet(str(out))
    else:
        dataset.save_to_disk(str(out))
    return out


def mixed_column(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Which column and row Arrow cannot hold with the rows before it, or None if it finds none."""
    import pyarrow as pa

    def fits(values: list[Any]) -> bool:
        try:
            pa.array(values)
        except (TypeError, ValueError):
            return False
        return True

    columns = dict.fromkeys(key for row in rows for key in row)
    for column in columns:
        values = [row.get(column) for row in rows]
        if fits(values):
            continue
        good, bad = 0, len(values)  # values[:good] fit, values[:bad] do not
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if fits(values[:middle]) else (good, middle)
        shown = orjson.dumps(values[bad - 1], default=str).decode()[:80]
        return f"column {column!r} of row {bad} is {shown}, of a different type than in the rows before it"
    return None


def load_rows(path: Path | str) -> list[dict[str, Any]]:
    """Rows written by `save_rows`, in any of its formats, messages cleaned of Arrow nulls."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise errors.DatasetError(f"{path}:{number}: not valid JSON ({exc})") from None
        return rows
    from datasets import Dataset, load_from_disk

    if path.is_file():
        rows = list(Dataset.from_parquet(str(path)))
    elif path.is_dir():
        rows = list(load_from_disk(str(path)))
    else:
        raise errors.DatasetError(f"no dataset at {path}: give a .jsonl or .parquet file, or a saved dataset folder")
    for row in rows:
        for column in ("prompt", "completion"):
            if isinstance(row.get(column), list):
                row[column] = [clean_message(m) for m in row[column]]
    return rows
