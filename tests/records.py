"""Reading what lmgym writes, for tests: JSON Lines files of runs and the proxy's traces."""

from __future__ import annotations

from pathlib import Path

import orjson


def jsonl(path: Path) -> list[dict]:
    """Every line of a JSON Lines file, parsed."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def read_traces(directory: Path) -> list[dict]:
    """Every trace the proxy wrote to `directory`, file by file in order."""
    return [trace for path in sorted(directory.glob("traces-*.jsonl")) for trace in jsonl(path)]
