"""`Sandbox`: one rollout's working directory, and `run(code)` in a confined child.

The parts it puts together live beside it (limits, isolation, cgroups, processes,
output, the runner); the package docstring says what a run gets and what it prevents.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lmgym.errors import SandboxError
from lmgym.sandbox.cgroups import CGROUP_PREFIX, SandboxCgroup, detect_cgroups
from lmgym.sandbox.isolation import Isolation, detect_isolation
from lmgym.sandbox.limits import SandboxLimits
from lmgym.sandbox.output import OutputProtocol
from lmgym.sandbox.processes import allocate_uid, kill_group, kill_uid, processes_of, release_uid
from lmgym.sandbox.result import ExecutionResult

logger = logging.getLogger(__name__)


def _remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
    except OSError:  # not root, and the code chmod-ed its own directories to 000
        for parent, directories, _files in os.walk(path):
            for name in directories:
                if not os.path.islink(os.path.join(parent, name)):
                    os.chmod(os.path.join(parent, name), 0o700)
        shutil.rmtree(path, ignore_errors=True)


class Sandbox:
    """A working directory and the means to run Python in it. One per rollout.

        async with Sandbox() as sandbox:
            result = await sandbox.run("print(6 * 7)")
            result.stdout, result.to_text(), result.metadata
    """

    def __init__(self, limits: SandboxLimits | None = None, *, namespaces: bool = True, python: str = sys.executable):
        """`namespaces=False` skips the namespaces even where they work (sockets are then
        blocked in Python); `python` is the interpreter that runs the code."""
        self.limits = limits or SandboxLimits()
        self.python = python
        self.namespaces = namespaces
        self.uid = allocate_uid() if os.geteuid() == 0 else None
        self.workdir = tempfile.mkdtemp(prefix="lmgym-sandbox-")
        if self.uid is not None:
            os.chown(self.workdir, self.uid, self.uid)
        self.closed = False
        self.isolation: Isolation | None = None
        self.cgroup: SandboxCgroup | None = None  # made by `prepare` where cgroups can be used
        self.history: list[dict[str, Any]] = []  # the metadata of every run
        self._lock: asyncio.Lock | None = None
        self._pgids: set[int] = set()

    def __repr__(self) -> str:
        return f"Sandbox({self.workdir!r}{', closed' if self.closed else ''})"

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    def _env(self) -> dict[str, str]:
        return {
            "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": self.workdir,
            "TMPDIR": self.workdir,
            "USER": "sandbox",
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONIOENCODING": "utf-8",
        }

    async def run(self, code: str, *, timeout_s: float | None = None) -> ExecutionResult:
        """Run `code` as a fresh program in the working directory. Never raises for what
        the code does; the calls of one sandbox run one at a time."""
        if self.closed:
            raise SandboxError(f"{self!r} is closed")
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            result = await self._run(code, self.limits.timeout_s if timeout_s is None else timeout_s)
        self.history.append(result.metadata)
        return result

    async def prepare(self) -> Isolation:
        """Find how code is isolated here (once per interpreter; `run` calls it too).
        Raises SandboxError as root when no unprivileged uid can run the interpreter:
        RLIMIT_NPROC does not bind root, and root code could write anywhere."""
        isolation = await asyncio.to_thread(detect_isolation, self.python, self.namespaces)
        if os.geteuid() == 0 and not isolation.drop_privileges:
            raise SandboxError(
                f"refusing to run code as root: no unprivileged user can run {self.python} here "
                "(is it under a private directory such as /root?) and namespaces "
                f"{'are not permitted' if self.namespaces else 'were turned off'}; install Python "
                "where other users can read it, or allow `unshare` (CAP_SYS_ADMIN)"
            )
        self.isolation = isolation
        if self.cgroup is None and self.uid is not None and not self.closed:
            self.cgroup = await asyncio.to_thread(self._make_cgroup)
        return isolation

    def _make_cgroup(self) -> SandboxCgroup | None:
        parents = detect_cgroups(self.python)
        if not parents:
            return None
        try:
            memory, pids = self.limits.memory_mb << 20, self.limits.processes + 1  # + the runner's supervisor
            return SandboxCgroup.create(parents, f"{CGROUP_PREFIX}{os.getpid()}-{self.uid}", memory_bytes=memory, pids=pids)
        except OSError as exc:
            logger.warning("sandbox memory limit falls back to per process: no cgroup: %s", exc)
            return None

    @property
    def memory_limit(self) -> str:
        """"cgroup" (all processes together) or "per-process"."""
        return "cgroup" if self.cgroup else "per-process"

    async def _run(self, code: str, timeout_s: float) -> ExecutionResult:
        isolation = await self.prepare()
        rlimits = self.limits.rlimits(memory_per_process=self.cgroup is None)
        if not isolation.drop_privileges and not isolation.prefix:  # RLIMIT_NPROC counts all our processes
            in_use = sum(threads for _, threads in await asyncio.to_thread(processes_of, os.getuid()))
            rlimits["RLIMIT_NPROC"] = (in_use + self.limits.processes,) * 2
        argv = isolation.command(
            self.python, rlimits=rlimits, uid=self.uid, deadline=math.ceil(timeout_s) + 2, workdir=self.workdir,
            cgroups=self.cgroup.procs_files if self.cgroup else (), tmpfs_mb=self.limits.memory_mb,
        )
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.settle)
        oom_kills = self.cgroup.oom_kills() if self.cgroup else 0
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        transport, protocol = await loop.subprocess_exec(
            lambda: OutputProtocol(self.limits), *argv,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=self.workdir, env=self._env(), start_new_session=True,
        )
        pgid = transport.get_pid()
        self._pgids.add(pgid)
        limit = None
        try:
            stdin = transport.get_pipe_transport(0)
            stdin.write(code.encode("utf-8", "replace"))
            stdin.close()
            await asyncio.wait([protocol.exited, protocol.over], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            if not protocol.exited.done():
                limit = "output" if protocol.over.done() else "timeout"
        finally:
            kill_group(pgid)  # what is left of the tree (all of it when we stopped it)
            self._pgids.discard(pgid)
            if self.uid is not None:  # even a process that left the group
                await asyncio.to_thread(kill_uid, self.uid)
            if self.cgroup is not None:  # even one of another uid
                await asyncio.to_thread(self.cgroup.kill_all)
            # Pipes may hold a little more output after the exit; a process that escaped the
            # group (possible only without namespaces, when not root) may hold them open.
            await asyncio.wait([protocol.exited, *protocol.closed.values()], timeout=2)
            transport.close()
        duration = time.monotonic() - started
        oom_kills = max(self.cgroup.oom_kills() - oom_kills, 0) if self.cgroup else 0  # 0 once `close` removed it
        return self._result(protocol, transport.get_returncode(), limit, duration, timeout_s, isolation, oom_kills)

    def _result(self, protocol, returncode, limit, duration, timeout_s, isolation, oom_kills) -> ExecutionResult:
        out, err = protocol.streams[1], protocol.streams[2]
        stderr = err.text()
        last_line = stderr.rstrip().rsplit("\n", 1)[-1]
        exit_code = None if limit else (128 - returncode if returncode < 0 else returncode)  # killed from outside
        signal_name = None
        if exit_code is not None and 128 < exit_code <= 128 + 64:
            signal_name = signal.Signals(exit_code - 128).name if exit_code - 128 in signal.valid_signals() else None
        if limit is None and signal_name == "SIGXCPU":
            limit = "cpu"
        elif limit is None and (oom_kills or exit_code == 1 and last_line.startswith("MemoryError")):
            limit = "memory"
        elif limit is None and exit_code == 1 and "[Errno 27] File too large" in last_line:
            limit = "file_size"
        return ExecutionResult(
            stdout=out.text(),
            stderr=stderr,
            exit_code=exit_code,
            duration_s=duration,
            limit=limit,
            signal=signal_name,
            dropped_bytes=out.dropped + err.dropped,
            network=isolation.network,
            uid=self.uid,
            timeout_s=timeout_s,
            memory_limit=self.memory_limit,
            user_namespaces=isolation.user_namespaces,
            oom_kills=oom_kills,
        )

    async def close(self) -> None:
        """Kill whatever still runs, delete the working directory. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for pgid in list(self._pgids):
            kill_group(pgid)
        if self.uid is not None:
            await asyncio.to_thread(kill_uid, self.uid)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill_all)
            await asyncio.to_thread(self.cgroup.remove)
        await asyncio.to_thread(_remove_tree, self.workdir)
        if self.uid is not None:
            release_uid(self.uid)
