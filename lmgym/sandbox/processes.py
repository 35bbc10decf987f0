"""The processes of a sandbox: its own uid, and killing every process it left behind.

As root, each open sandbox runs as a uid of its own, so that its process limit is its
own and every process of that uid can be found in /proc and killed after each call, even
one that left the process group.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from lmgym.errors import SandboxError

UID_BASE = 2_000_000_000  # far above any real account; one uid per open sandbox
UIDS_PER_PROCESS = 1000
_uids_in_use: set[int] = set()


def allocate_uid() -> int:
    """A uid no open sandbox of this process has: each process draws from its own range."""
    start = UID_BASE + (os.getpid() % 100_000) * UIDS_PER_PROCESS
    uid = next((u for u in range(start, start + UIDS_PER_PROCESS) if u not in _uids_in_use), None)
    if uid is None:
        raise SandboxError(f"more than {UIDS_PER_PROCESS} sandboxes open at once in one process")
    _uids_in_use.add(uid)
    return uid


def release_uid(uid: int) -> None:
    """`uid` may be given to the next sandbox (its own is closed)."""
    _uids_in_use.discard(uid)


def processes_of(uid: int) -> list[tuple[int, int]]:
    """(pid, threads) of every live process whose real uid is `uid`, from /proc."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue  # it exited meanwhile
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] not in ("Z", "X"):
                found.append((int(entry.name), int(fields.get("Threads", "1"))))
    return found


def kill_uid(uid: int, rounds: int = 100) -> int:
    """SIGKILL every process of a sandbox's own uid, again until none is left (a fork
    bomb forks between the listing and the kill); how many were killed."""
    killed = 0
    for _ in range(rounds):
        victims = processes_of(uid)
        if not victims:
            break
        for pid, _threads in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return killed


def kill_group(pgid: int) -> None:
    """SIGKILL a process group that may be gone already."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
