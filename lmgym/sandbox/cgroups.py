"""Cgroups for sandboxes: one per sandbox, under lmgym's own cgroup, when run as root.

A cgroup is the only way to bound the memory of all of a sandbox's processes together
(an rlimit binds each process alone) and to find every one of them, whatever its uid.
Both cgroup v2 and v1's memory (and pids) hierarchies are handled; where neither can be
used, sandboxes fall back to per-process limits. See the package docstring.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CGROUP_PREFIX = "lmgym-sandbox-"
_LEAF = "lmgym-main"  # cgroup v2: where lmgym moves itself so that its cgroup can delegate

_LIMIT_FILES = ("memory.max", "memory.swap.max", "memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "pids.max")
"""What a sandbox cgroup sets, where the file exists (v2: the first two; v1: the next two,
in that order since memsw may not be below the limit; both: pids.max)."""


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, type, super options) of each mount, from /proc/self/mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) >= 5 and len(tail) >= 3:
            found.append((fields[3], fields[4], tail[0], set(tail[2].split(","))))
    return found


def _under(mount_root: str, mount_point: str, path: str) -> str | None:
    """Where cgroup `path` lies under a cgroup mount, or None if that mount does not show it."""
    relative = os.path.relpath(path, mount_root)
    return None if relative.startswith("..") else os.path.normpath(os.path.join(mount_point, relative))


def _delegate_v2(directory: str) -> str:
    """Make a v2 cgroup hand memory (and pids) to its children, and say which: OSError
    where it cannot. The "no internal processes" rule allows that only in a cgroup without
    processes, so when this process is the only one in it (lmgym as a container's PID 1,
    a systemd scope with Delegate=yes) it first moves itself into a leaf below, where it
    stays under the same limits; with other processes there, nothing is moved."""
    if os.path.basename(directory) == _LEAF:  # moved there before (or started by a process that was)
        directory = os.path.dirname(directory)
    available = Path(directory, "cgroup.controllers").read_text().split()
    control = Path(directory, "cgroup.subtree_control")
    wanted = [c for c in ("memory", "pids") if c in available and c not in control.read_text().split()]
    if wanted and Path(directory, "cgroup.procs").read_text().split() == [str(os.getpid())]:
        leaf = Path(directory, _LEAF)
        leaf.mkdir(exist_ok=True)
        Path(leaf, "cgroup.procs").write_text(str(os.getpid()))
    for controller in wanted:
        control.write_text(f"+{controller}")
    return directory


def cgroup_parents() -> tuple[str, ...]:
    """The cgroup directories (this process's own) under which a sandbox cgroup with a
    memory limit can be made: (the v2 directory,) when v2 has the memory controller and
    can hand it to children (which may move this process, see `_delegate_v2`); else (v1
    memory directory, v1 pids directory if mounted); () when neither."""
    own = {}  # controller ("" for v2) → this process's cgroup path
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    mounts = _mounts()
    v2 = next((_under(root, point, own[""]) for root, point, kind, _ in mounts if kind == "cgroup2" and "" in own), None)
    if v2 and "memory" in Path(v2, "cgroup.controllers").read_text().split():
        try:
            return (_delegate_v2(v2),)
        except OSError as exc:
            logger.info("cgroup v2 at %s cannot hand the memory controller to a sandbox: %s", v2, exc)
    v1 = {}
    for controller in ("memory", "pids"):
        for root, point, kind, options in mounts:
            if kind == "cgroup" and controller in options and controller in own:
                v1[controller] = _under(root, point, own[controller])
    return tuple(v1[c] for c in ("memory", "pids") if v1.get(c)) if v1.get("memory") else ()


@dataclass(frozen=True)
class SandboxCgroup:
    """The cgroup (one directory per hierarchy) that holds every process of one sandbox."""

    directories: tuple[str, ...]

    @classmethod
    def create(cls, parents: tuple[str, ...], name: str, *, memory_bytes: int, pids: int) -> SandboxCgroup:
        """Make `name` under each parent and set its limits; OSError when that fails."""
        cgroup = cls(tuple(os.path.join(parent, name) for parent in parents))
        try:
            for directory in cgroup.directories:
                os.mkdir(directory)
                values = {"memory.swap.max": 0, "pids.max": pids}
                for file in _LIMIT_FILES:
                    if os.path.exists(os.path.join(directory, file)):
                        Path(directory, file).write_text(str(values.get(file, memory_bytes)))
            if not any(os.path.exists(os.path.join(d, f)) for d in cgroup.directories for f in ("memory.max", "memory.limit_in_bytes")):
                raise OSError(f"no memory limit file in {cgroup.directories}")
        except OSError:
            cgroup.remove(wait_s=0)
            raise
        return cgroup

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(os.path.join(directory, "cgroup.procs") for directory in self.directories)

    def oom_kills(self) -> int:
        """Processes the kernel killed for this cgroup's memory limit so far (v2:
        memory.events, v1: memory.oom_control; both have an `oom_kill N` line)."""
        count = 0
        for directory in self.directories:
            for file in ("memory.events", "memory.oom_control"):
                try:
                    text = Path(directory, file).read_text()
                except OSError:
                    continue
                count += sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill "))
        return count

    def _members(self) -> tuple[set[int], int]:
        """The processes the cgroup lists, and the tasks its pids.max still counts (dying
        ones included)."""
        listed, counted = set(), 0
        for directory in self.directories:
            try:
                listed.update(int(pid) for pid in Path(directory, "cgroup.procs").read_text().split())
                if os.path.exists(current := os.path.join(directory, "pids.current")):
                    counted += int(Path(current).read_text())
            except (OSError, ValueError):
                continue
        return listed, counted

    def kill_all(self, wait_s: float = 2.0) -> bool:
        """SIGKILL every process in the cgroup until none is left."""
        deadline = time.monotonic() + wait_s
        while listed := self._members()[0]:
            for pid in listed:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() >= deadline:
                logger.warning("processes of the sandbox cgroup %s outlived %g s of SIGKILL", self.directories[0], wait_s)
                return False
            time.sleep(0.01)
        return True

    def settle(self, wait_s: float = 2.0) -> bool:
        """Wait until pids.max counts no process of an earlier call. Killed processes whose
        parent died too are counted until the machine's init reaps them (about a second
        on some VMs), and a fork bomb's would fail this call's own forks."""
        deadline = time.monotonic() + wait_s
        while self._members()[1] and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._members()[1]

    def remove(self, wait_s: float = 5.0) -> bool:
        """Remove the directories; processes just killed may take a moment to leave."""
        deadline = time.monotonic() + wait_s
        for directory in self.directories:
            while True:
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if time.monotonic() >= deadline:
                        logger.warning("could not remove the sandbox cgroup %s: %s", directory, exc)
                        return False
                    time.sleep(0.02)
        return True


def _remove_stale_cgroups(parents: tuple[str, ...]) -> None:
    """Sandbox cgroups left by lmgym processes that died without closing them."""
    for parent in parents:
        for entry in os.scandir(parent):
            match = re.fullmatch(rf"{CGROUP_PREFIX}(\d+)-\w+", entry.name)
            if match and entry.is_dir() and not os.path.exists(f"/proc/{match[1]}"):
                SandboxCgroup((entry.path,)).remove(wait_s=0)


_probing_cgroups = threading.Lock()  # sandboxes are prepared from several threads at once


@functools.cache
def detect_cgroups(python: str = sys.executable) -> tuple[str, ...]:
    """The parents for sandbox cgroups (see `cgroup_parents`), once a probe cgroup took a
    process of `python`; () when not root (the runner could not join one) or when no
    memory controller can be used here."""
    if os.geteuid() != 0:
        return ()
    with _probing_cgroups:  # one probe cgroup name per process
        try:
            parents = cgroup_parents()
            if not parents:
                return ()
            _remove_stale_cgroups(parents)
            probe = SandboxCgroup.create(parents, f"{CGROUP_PREFIX}{os.getpid()}-probe", memory_bytes=64 << 20, pids=8)
        except OSError as exc:
            logger.info("no cgroup for sandboxes here: %s", exc)
            return ()
        try:
            code = "import sys\nfor procs in sys.argv[1:]:\n    open(procs, 'w').write('0')\nprint(open('/proc/self/cgroup').read())"
            joined = subprocess.run([python, "-I", "-c", code, *probe.procs_files], capture_output=True, timeout=30, env={}, check=False)
        finally:
            probe.remove()
    if joined.returncode != 0 or f"{CGROUP_PREFIX}{os.getpid()}-probe" not in joined.stdout.decode():
        logger.info("a process cannot join a sandbox cgroup here: %s", joined.stderr.decode(errors="replace")[-500:])
        return ()
    return parents
