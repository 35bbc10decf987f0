"""Run directories: claimed atomically, held by one process for the life of a run.

Two runs started in the same second (a sweep) must never share a directory, and a run
must never be written by two processes at once (two `--resume` of one run). So:

- `claim_run_dir` creates runs/KIND/ENV--MODEL--TIME with `mkdir` (no `exist_ok`): the
  process whose `mkdir` succeeds owns the name; the others take `-2`, `-3`, ...
- `RunLock` holds an exclusive `flock` on RUN_DIR/.lock while the run runs. The kernel
  releases it when the process dies (kill -9 included), so a crashed run can always be
  resumed, and a live one never twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Iterator, Optional

from lmgym.errors import UsageError

LOCK_FILE = ".lock"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class RunLockedError(UsageError):
    kind = "run_locked"


def safe_name(text: str) -> str:
    """A path component for a name: an environment group `a,b` becomes `a+b`, a hub id
    `org/model` becomes `org_model`."""
    return _UNSAFE.sub("_", text.replace(",", "+")).strip("._") or "run"


def run_dir_name(env: str, model: str, when: Optional[datetime] = None) -> str:
    return f"{safe_name(env)}--{safe_name(model)}--{(when or datetime.now()):%Y%m%d-%H%M%S}"


def claim_run_dir(kind: str, env: str, model: str, root: Path = Path("runs")) -> Path:
    """Create and return a new, empty run directory that no other process has claimed."""
    base = root / kind / run_dir_name(env, model)
    base.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 10_000):
        path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UsageError(f"could not claim a run directory next to {base}: 10,000 names are taken")


def require_fresh_dir(path: Path, resume_flag: Optional[str] = "--resume") -> None:
    """A directory the user named for a new run must be new or empty: never count or
    overwrite another run's files as this run's. `resume_flag=None`: runs of this kind
    cannot be continued (`lmgym sft`)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{path} exists and is not a directory; choose another output directory")
    if path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir()):
        resume = f"To continue that run use {resume_flag} {path}; to start a new one" if resume_flag else "To start a new run,"
        raise UsageError(f"{path} already holds files of another run. {resume} choose an output directory that does not exist yet")


@contextlib.contextmanager
def discard_if_unused(run_dir: Path, created_here: bool = True) -> Iterator[None]:
    """Remove a directory this process created when the run fails before writing anything
    but its lock (a bad environment name, say), so failed starts leave no empty runs."""
    try:
        yield
    except BaseException:
        if created_here and run_dir.is_dir() and all(p.name == LOCK_FILE for p in run_dir.iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


class RunLock:
    """An exclusive lock on a run directory, held until `release()` or process exit."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is in use by another lmgym process{holder}; wait for it to finish "
                f"or stop it, then resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""
