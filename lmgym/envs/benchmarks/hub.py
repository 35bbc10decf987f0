"""A benchmark's data: one file of a Hugging Face dataset at a pinned commit, or a local copy.

A benchmark names the file that holds its split in the dataset's repository at a commit
(`HubFile`). `load_rows` reads, first found: the file given as the environment's
`data_path` argument; `NAME.jsonl` (or `.json`, `.parquet`, `.csv`) in the folder named
by the environment variable LMGYM_BENCHMARK_DATA; else the pinned file itself through the
Hugging Face cache (downloaded once when online, read from the cache offline; HF_TOKEN for
a gated dataset). A local copy holds rows in the dataset's own columns, so the file
downloaded from the hub is one. When none can be read, one `DatasetError` names the
dataset, its revision and how to point at a local copy.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmgym.errors import DatasetError

DATA_DIR_VAR = "LMGYM_BENCHMARK_DATA"
SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

Row = dict[str, Any]


@dataclass(frozen=True)
class HubFile:
    """One split of a Hugging Face dataset: the file holding it in `repo` at commit `revision`."""

    name: str  # the environment; its local copy in LMGYM_BENCHMARK_DATA is NAME.jsonl (.json, .parquet, .csv)
    repo: str
    revision: str
    path: str  # inside the repository
    split: str
    columns: tuple[str, ...]  # those the environment reads; a local copy must have them
    gated: bool = False


def load_rows(source: HubFile, data_path: str | None = None) -> list[Row]:
    """The split's rows: from `data_path`, else LMGYM_BENCHMARK_DATA, else the hub."""
    path = Path(data_path) if data_path else local_copy(source) or download(source)
    return checked(read_rows(path), source, path)


def local_copy(source: HubFile) -> Path | None:
    """NAME.<suffix> in the folder LMGYM_BENCHMARK_DATA names; None when the variable is unset."""
    folder = os.environ.get(DATA_DIR_VAR)
    if not folder:
        return None
    for suffix in SUFFIXES:
        if (path := Path(folder) / f"{source.name}{suffix}").is_file():
            return path
    raise DatasetError(f"{DATA_DIR_VAR}={folder} holds no copy of {source.name}: expected {source.name}.jsonl "
                       f"(or {', '.join(SUFFIXES[1:])}) there")


def download(source: HubFile) -> Path:
    """The pinned file, through the Hugging Face cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(source.repo, source.path, repo_type="dataset", revision=source.revision))
    except (OSError, EntryNotFoundError, ValueError) as exc:  # offline, unreachable, gated, missing
        raise DatasetError(unavailable(source, exc)) from None


def unavailable(source: HubFile, cause: BaseException) -> str:
    """Why the hub copy could not be read, and how to point lmgym at a local one."""
    why = " ".join(str(cause).split())[:300] or type(cause).__name__
    gated = (f" The dataset is gated: accept its terms at https://huggingface.co/datasets/{source.repo} "
             f"and set HF_TOKEN." if source.gated else "")
    return (
        f"{source.name}: cannot read {source.path} of the Hugging Face dataset {source.repo} ({source.split} split) "
        f"at revision {source.revision}: {why}.{gated} To use a local copy: fetch it on a machine with internet "
        f"(`hf download {source.repo} {source.path} --repo-type dataset --revision {source.revision}`), then pass "
        f"its path with -a '{{\"data_path\": \"PATH\"}}', or copy it into a folder as {source.name}{Path(source.path).suffix} "
        f"and set {DATA_DIR_VAR} to that folder (or copy its Hugging Face cache here: HF_HOME)"
    )


def read_rows(path: Path) -> list[Row]:
    """Rows of a JSON Lines, JSON (a list of objects), Parquet or CSV file."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}
    if path.suffix not in readers:
        raise DatasetError(f"{path}: cannot read a {path.suffix or 'suffix-less'} file; use one of {', '.join(SUFFIXES)}")
    return readers[path.suffix](path)


def checked(rows: list[Row], source: HubFile, path: Path) -> list[Row]:
    """`rows`, refused with the first row that lacks a column the benchmark reads."""
    if not rows:
        raise DatasetError(f"{path}: no rows")
    for number, row in enumerate(rows, 1):
        if missing := [c for c in source.columns if c not in row]:
            raise DatasetError(f"{path}: row {number} has no column {', '.join(map(repr, missing))} "
                               f"(a copy of {source.repo} has {', '.join(source.columns)})")
    return rows


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            rows.append(_object(line, f"{path}: line {number}"))
    return rows


def _read_json(path: Path) -> list[Row]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise DatasetError(f"{path}: expected a list of objects, one per row")
    return data


def _object(text: str, where: str) -> Row:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not JSON ({exc})") from None
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected an object, got {type(row).__name__}")
    return row


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_table(path).to_pylist()
    except pyarrow.ArrowException as exc:
        raise DatasetError(f"{path}: not a Parquet file ({exc})") from None


def _read_csv(path: Path) -> list[Row]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))
