"""How code is isolated on this machine (namespaces, a dropped uid, private directories,
the seccomp filter), found once by trying, and the command line that applies it.

Which protections a machine allows is only known by trying them: `detect_isolation`
runs a probe under each candidate, strongest first, and keeps the first that works.
`Isolation.command` is the child's command line: `unshare` (with namespaces), the
interpreter and `runner.py` with its configuration.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

from lmgym.sandbox.limits import SandboxLimits
from lmgym.sandbox.processes import UID_BASE
from lmgym.sandbox.seccomp import user_namespace_filter

logger = logging.getLogger(__name__)

NAMESPACES = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run")
"""Covered by a fresh tmpfs in the sandbox's mount namespace: where host sockets and
scratch files live (/var/run is usually a link to /run and then covered once)."""
RUNNER = str(Path(__file__).with_name("runner.py"))
"""The program the child runs (by path: it is not imported, and the interpreter that runs
it need not have lmgym installed)."""
_PROBE_UID = UID_BASE - 1
_PROBE_CODE = "import multiprocessing, os, sysconfig\nfor path in set(sysconfig.get_paths().values()):\n    os.path.isdir(path) and os.listdir(path)"


def entries_below(directory: str, paths: Iterable[str]) -> tuple[str, ...]:
    """The first component below `directory` of each path under it (what a tmpfs over
    `directory` must show again)."""
    found = set()
    for path in paths:
        relative = os.path.relpath(path, directory)
        if relative != "." and not relative.startswith(".."):
            found.add(relative.split(os.sep)[0])
    return tuple(sorted(found))


def private_dirs() -> tuple[str, ...]:
    """The real paths of PRIVATE_DIRS that exist here, each once."""
    found: list[str] = []
    for directory in PRIVATE_DIRS:
        real = os.path.realpath(directory)
        if os.path.isdir(real) and real not in found:
            found.append(real)
    return tuple(found)


@dataclass(frozen=True)
class Isolation:
    """How runs are isolated on this machine, found once by trying."""

    prefix: tuple[str, ...] = ()  # the unshare command, or () without namespaces
    drop_privileges: bool = False  # root: each sandbox runs as its own uid
    expose: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (hidden directory, entries to show)
    private: tuple[str, ...] = ()  # directories covered by a fresh tmpfs (with namespaces)
    keep: tuple[str, ...] = ()  # paths the private tmpfs must show again: the interpreter's
    seccomp: tuple[tuple[int, int, int, int], ...] = ()  # the user-namespace filter, or ()

    @property
    def network(self) -> str:
        return "namespace" if self.prefix else "sockets-blocked"

    @property
    def user_namespaces(self) -> str:
        return "denied" if self.seccomp else "allowed"

    def command(
        self, python: str, *, rlimits: dict, uid: int | None, deadline: int,
        workdir: str | None = None, cgroups: Iterable[str] = (), tmpfs_mb: int = 64,
    ) -> list[str]:
        """`workdir`: shown again under the tmpfs that covers where it lies; `cgroups`: the
        cgroup.procs files the runner joins; `tmpfs_mb`: the size of each private tmpfs."""
        workdirs = [os.path.realpath(workdir)] if workdir else []
        mounts = [[hidden, sorted({*entries, *entries_below(hidden, workdirs)}), "mode=755,size=64k"] for hidden, entries in self.expose]
        mounts += [[directory, list(entries_below(directory, [*self.keep, *workdirs])), f"mode=1777,size={tmpfs_mb}m"] for directory in self.private]
        config = {
            "rlimits": rlimits,
            "uid": uid if self.drop_privileges else None,
            "block_sockets": not self.prefix,
            "deadline": deadline,
            "mounts": mounts,
            "cgroups": list(cgroups),
            "seccomp": [list(instruction) for instruction in self.seccomp],
        }
        return [*self.prefix, python, "-I", "-u", RUNNER, json.dumps(config)]


def hidden_ancestors(paths: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Directories that other users cannot enter on the way to `paths` (e.g. /root, mode
    700, on the way to /root/.pyenv), each with the entries below it that lead there."""
    hidden: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(path).parts
        for depth in range(2, len(parts)):
            ancestor = str(Path(*parts[:depth]))
            try:
                if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                    hidden.setdefault(ancestor, set()).add(parts[depth])
                    break
            except OSError:
                break
    return tuple((directory, tuple(sorted(entries))) for directory, entries in sorted(hidden.items()))


def _interpreter_paths(python: str) -> list[str]:
    """Where `python` reads from: its path, its prefixes, the real file of its binary."""
    code = "import json, os, sys; print(json.dumps([*sys.path, sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]))"
    probe = subprocess.run([python, "-I", "-c", code], capture_output=True, timeout=30, env={}, check=True)
    return [path for path in json.loads(probe.stdout) if os.path.isabs(path)] + [python]  # not import hooks


def _works(isolation: Isolation, python: str) -> bool:
    """Can `isolation` run code that imports the standard library here?"""
    argv = isolation.command(python, rlimits=SandboxLimits().rlimits(), uid=_PROBE_UID, deadline=30)
    try:
        probe = subprocess.run(argv, input=_PROBE_CODE.encode(), capture_output=True, timeout=30, env={}, cwd="/", check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("sandbox isolation %s does not work here: %s", isolation, exc)
        return False
    if probe.returncode != 0:
        logger.info("sandbox isolation %s does not work here: %s", isolation, probe.stderr.decode(errors="replace")[-500:])
    return probe.returncode == 0


@functools.cache
def detect_isolation(python: str = sys.executable, namespaces: bool = True) -> Isolation:
    """The strongest isolation that works on this machine, tried once per interpreter:
    namespaces (as root, or through a user namespace) else blocked sockets; as root,
    always a dropped uid (with the interpreter exposed if it lives in a private directory);
    each with the user-namespace filter where seccomp takes it, else without.
    As root with no uid that can run `python`, the result has `drop_privileges=False`
    and `Sandbox` refuses to run."""
    root = os.geteuid() == 0
    unshare = shutil.which("unshare") if namespaces else None
    bases = []
    if unshare:
        paths = _interpreter_paths(python)
        own = (unshare, *NAMESPACES) if root else (unshare, "--user", "--map-root-user", *NAMESPACES)
        bases.append(Isolation(own, root, hidden_ancestors(paths) if root else (), private_dirs(), tuple(paths)))
    bases.append(Isolation((), root))
    seccomp = user_namespace_filter(platform.machine())
    candidates = [candidate for base in bases for candidate in ([replace(base, seccomp=seccomp)] if seccomp else []) + [base]]
    for isolation in candidates:
        if _works(isolation, python):
            return isolation
    return Isolation()
