"""results.jsonl and metadata.json: written as we go, so nothing is lost and runs resume.

Each finished rollout is one JSON line, appended and flushed at once: written from a
coroutine, at the end of the event loop's current pass, so that the rollouts finishing
together (thousands in flight) cost one write call, not one each. A run killed at any
point leaves a valid file apart, at worst, from a torn last line, which resuming drops
(that rollout is simply run again). metadata.json is replaced atomically.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import Any, Iterable

import orjson

from lmgym.errors import ResultsFileError, UsageError
from lmgym.types import RolloutRecord

RESULTS_FILE = "results.jsonl"
METADATA_FILE = "metadata.json"
_DUMP_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def is_finite_number(value: Any) -> bool:
    """A record's number as readers count it: an int or float, finite, and not a bool (a
    file written by hand or by another tool may hold text, null or NaN where numbers go)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def dumps_line(record: RolloutRecord | dict[str, Any]) -> bytes:
    """One JSONL line. Values JSON cannot hold (author state such as objects) become str."""
    return orjson.dumps(record, option=_DUMP_OPTIONS, default=str)


def rollout_key(record: RolloutRecord) -> tuple[Any, int]:
    example_id = record["example_id"]
    return (example_id if isinstance(example_id, (int, str)) else str(example_id), record["rollout"])


def open_lines_for_append(path: Path, buffering: int = -1):
    """Open a JSONL file for appending; when its last line lacks the newline (a torn write,
    or a file written by a script) close that line first, so no record is glued onto it."""
    file = open(path, "ab+", buffering=buffering)
    if file.tell() > 0:
        file.seek(-1, os.SEEK_END)
        if file.read(1) != b"\n":
            file.write(b"\n")
            file.flush()
    return file


class ResultsWriter:
    """Appends records to results.jsonl, one line each, flushed at once (from a coroutine:
    when the event loop's current pass ends)."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open_lines_for_append(path)
        self._flush_pending = False

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        self._file.write(b"".join(dumps_line(r) for r in records))
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._file.flush()
            return
        self._flush_pending = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def read_results(path: Path, *, complete_groups_of: int | None = None) -> list[dict[str, Any]]:
    """Load the records of a results file for resuming, repairing it on disk if needed.

    A torn last line (the run was killed mid-write) is dropped; a bad line elsewhere is an
    error naming the line, since it means the file was edited. Duplicate rollouts keep
    their first record. With `complete_groups_of=R` (group reward functions score the R
    rollouts of an example together), examples with fewer than R records are dropped so
    they are run again as a whole.
    """
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    records: dict[tuple[Any, int], dict[str, Any]] = {}
    dropped = False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
            key = rollout_key(record)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            if number == len(lines):  # the torn tail of an interrupted write
                dropped = True
                continue
            raise ResultsFileError(f"{path}:{number}: not a rollout record ({exc}); fix or remove that line") from None
        if key in records:
            dropped = True
            continue
        records[key] = record
    kept = list(records.values())
    if complete_groups_of is not None:
        counts: dict[Any, int] = {}
        for example_id, _ in records:
            counts[example_id] = counts.get(example_id, 0) + 1
        complete = [r for r in kept if counts[rollout_key(r)[0]] >= complete_groups_of]
        dropped = dropped or len(complete) != len(kept)
        kept = complete
    if dropped:
        _rewrite(path, kept)
    return kept


def _rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_bytes(b"".join(dumps_line(r) for r in records))
    os.replace(tmp, path)


def read_jsonl(path: Path, *, live: bool = True, error: type[UsageError] = ResultsFileError) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file; every reader of one goes through here.

    `live`: a file that may still be being written (results, metrics), read without
    touching it: missing reads as empty and a torn last line is skipped (`read_results`
    would repair it on disk, racing the writer). Otherwise (SFT data) the file must exist
    and every line parse. A bad line is an `error` naming the file and line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if live:
            return []
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = data.split(b"\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if live and number == len(lines):
                continue
            raise error(f"{path}:{number}: not valid JSON ({exc}); a JSON Lines file holds one JSON object per line") from None
        if not isinstance(row, dict):
            preview = orjson.dumps(row, default=str).decode()[:60]
            raise error(f"{path}:{number}: expected one JSON object per line, found {type(row).__name__} {preview}")
        rows.append(row)
    return rows


def write_metadata(run_dir: Path, metadata: dict[str, Any]) -> None:
    tmp = run_dir / (METADATA_FILE + ".tmp")
    tmp.write_bytes(orjson.dumps(metadata, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str))
    os.replace(tmp, run_dir / METADATA_FILE)


def read_metadata(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METADATA_FILE
    try:
        return orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise ResultsFileError(f"{run_dir} is not an lmgym run directory: {METADATA_FILE} is missing") from None
    except orjson.JSONDecodeError as exc:
        raise ResultsFileError(f"{path} is not valid JSON: {exc}") from None
