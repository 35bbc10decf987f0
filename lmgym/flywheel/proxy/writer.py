"""`TraceWriter`: the proxy's trace files, one JSON line per exchange, rotated by size.

Its own module because the file format's guarantees (whole lines, one write each, torn
lines closed, secrets scrubbed, continued across restarts) hold whatever serves the
exchanges.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from lmgym.eval.results import open_lines_for_append

TRACE_FILE = re.compile(r"traces-(\d{5,})\.jsonl")


def trace_path(directory: Path, index: int) -> Path:
    return directory / f"traces-{index:05d}.jsonl"


class TraceWriter:
    """Appends records as JSON lines to DIR/traces-NNNNN.jsonl, a new file every `rotate_bytes`.

    Each line is written whole with one unbuffered write (no Python buffer to flush), under
    a lock. An existing folder is continued: the highest-numbered file is appended to.
    Every occurrence of a `secrets` string (8 characters or more) is replaced by `***`.
    """

    def __init__(self, directory: Path | str, rotate_bytes: int = 100 * 2**20, secrets: Iterable[str | None] = ()):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self._secrets = [s.encode() for s in secrets if s and len(s) >= 8]
        self._lock = threading.Lock()
        self._file = None
        self._size = 0
        existing = [int(m.group(1)) for p in self.directory.iterdir() if (m := TRACE_FILE.fullmatch(p.name))]
        self._index = max(existing, default=1)
        self.written = 0  # records written by this writer

    @property
    def path(self) -> Path:
        """The file the next record goes to (unless it is full)."""
        return trace_path(self.directory, self._index)

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        for secret in self._secrets:
            line = line.replace(secret, b"***")
        with self._lock:
            if self._file is None:
                self._open()
            if self._size and self._size + len(line) > self.rotate_bytes:
                self._file.close()
                self._index += 1
                self._open()
            self._write_all(line)
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open(self) -> None:
        self._file = open_lines_for_append(self.path, buffering=0)  # a line torn by a crash is closed first
        self._size = os.fstat(self._file.fileno()).st_size

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written:]
        self._size += len(data)
