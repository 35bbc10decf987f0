"""`Sandbox`: run model-written Python on this machine, in a child process, with limits.

One `Sandbox` per rollout owns a fresh working directory; every `run(code)` starts a new
interpreter in it, so files persist between the calls of a rollout but nothing else does
(no process outlives its call). `await sandbox.close()` kills what is left and deletes
the directory. No cloud account, container runtime or extra package is needed.

What each call gets, and what that prevents:

- **Time**: a wall-clock timeout kills the whole process tree; a CPU-time rlimit and a
  deadline inside the runner are back-ups, so a sandbox dies even if lmgym itself crashed.
- **Memory, file size, processes**: rlimits set in the child before the code runs
  (address space → `MemoryError`; file size → `OSError: File too large`; process count
  → `fork` fails, so a fork bomb stalls instead of taking the machine).
- **Output**: stdout and stderr are read as they come; the model sees the head and the
  tail of each (a marker says how many bytes were dropped), and the program is killed
  once it has printed more than `output_kill_bytes`: printing 1 GB never buffers 1 GB.
- **Environment**: a minimal one (PATH, HOME and TMPDIR = the working directory, LANG),
  never the parent's variables (API keys).
- **Network**: a new, empty network namespace (`unshare --net`, loopback down), so
  nothing is reachable, not even servers on the host's 127.0.0.1. Where namespaces are
  not permitted, Python's `socket` is patched to refuse internet sockets instead: that
  stops accidents, not a program that runs `curl` or calls libc through ctypes. Which
  one applied is in every result: `network="namespace"` or `network="sockets-blocked"`.
- **Processes and users**: with namespaces the code also gets its own PID namespace and
  /proc (it cannot see or signal host processes; when its first process exits, every
  process it started dies). When lmgym runs as root, the code runs as a dedicated
  unprivileged uid (one per open sandbox, from 2,000,000,000 up, no_new_privs set),
  because RLIMIT_NPROC is not enforced for root, and so that file permissions apply: the
  code can write only its working directory and world-writable places, cannot read
  private files nor the parent's /proc/PID/environ, and sandboxes cannot touch each
  other. A uid per sandbox also keeps the process limit per sandbox (processes sharing a
  uid share one count) and lets `run` kill every process of that uid after each call,
  even one that left the process group. If the interpreter lives where that uid cannot
  enter (a Python under /root, mode 700), the mount namespace covers the private
  directory with a tmpfs showing only the way to the interpreter. As root with neither
  a working uid nor namespaces, `Sandbox` refuses to run (`SandboxError`) rather than
  run code as root.

What it does NOT prevent (it is a guard for honest mistakes and casual misbehaviour, not
a security boundary against a determined attacker; use gVisor or Firecracker for that):

- reading world-readable files of the host (the repository, /etc, the virtualenv);
- writing world-writable places (/tmp, /var/tmp, /dev/shm); the written files stay;
- filling the disk with many files, each under the file-size limit;
- CPU and disk-bandwidth contention with the rest of the machine;
- kernel exploits, and side channels.
- When not root, the code runs as your own user: it can read and write whatever you can
  (with namespaces, a user namespace maps you to root, but the files are still yours).
  Without namespaces it can also read `/proc/PID/environ` of your other processes, and a
  process that leaves the process group (`setsid`) survives its call.

Measured on the development machine (root in a VM, util-linux 2.38, Python under /root):
namespaces, the uid drop and the /root tmpfs all work, and a call costs about 30 ms more
than a bare `python -c pass`. As an unprivileged user, `unshare --user` works there too.
`unshare --fork` of util-linux 2.38 reports a child killed by a signal as exit status 1,
which is one reason the runner forks a supervisor that reports 128+N itself.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmgym.errors import SandboxError

logger = logging.getLogger(__name__)

UID_BASE = 2_000_000_000  # far above any real account; one uid per open sandbox
UIDS_PER_PROCESS = 1000
_uids_in_use: set[int] = set()

NAMESPACES = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


@dataclass(frozen=True)
class SandboxLimits:
    """What one `run` may use."""

    timeout_s: float = 10.0
    """Wall-clock seconds before the whole process tree is killed."""
    cpu_s: float | None = None
    """CPU seconds per process (RLIMIT_CPU); None means `timeout_s + 1`, a back-up."""
    memory_mb: int = 512
    """Address space per process (RLIMIT_AS)."""
    file_size_mb: int = 10
    """Largest file a process may write (RLIMIT_FSIZE)."""
    processes: int = 32
    """Processes and threads of the sandbox's uid (RLIMIT_NPROC)."""
    output_bytes: int = 16_384
    """Bytes of each of stdout and stderr shown; the middle beyond that is dropped."""
    output_kill_bytes: int = 10_000_000
    """Total bytes printed after which the program is killed."""

    def rlimits(self) -> dict[str, tuple[int, int]]:
        cpu = math.ceil(self.cpu_s if self.cpu_s is not None else self.timeout_s + 1)
        return {
            "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second on
            "RLIMIT_AS": (self.memory_mb << 20,) * 2,
            "RLIMIT_FSIZE": (self.file_size_mb << 20,) * 2,
            "RLIMIT_NPROC": (self.processes,) * 2,
            "RLIMIT_CORE": (0, 0),
        }


@dataclass
class ExecutionResult:
    """How one run ended and what it printed (head and tail when long)."""

    stdout: str
    stderr: str
    exit_code: int | None
    """The program's exit status; 128+N when signal N killed it; None when we killed it."""
    duration_s: float
    limit: str | None = None
    """The limit it hit: timeout, output, memory, file_size, cpu, or None."""
    signal: str | None = None
    dropped_bytes: int = 0
    network: str = ""
    uid: int | None = None
    timeout_s: float = 0.0

    @property
    def timed_out(self) -> bool:
        return self.limit == "timeout"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_text(self) -> str:
        """What the model sees as the tool result."""
        parts = [self.stdout.rstrip("\n")] if self.stdout else []
        if self.stderr:
            parts.append(f"[stderr]\n{self.stderr.rstrip()}")
        if self.limit == "timeout":
            parts.append(f"[killed: still running after {self.timeout_s:g} s]")
        elif self.limit == "output":
            parts.append("[killed: printed too much output]")
        elif self.signal:
            parts.append(f"[killed by {self.signal}" + (": CPU time limit]" if self.limit == "cpu" else "]"))
        elif self.exit_code:
            parts.append(f"[exit code {self.exit_code}]")
        return "\n".join(parts) or "(no output)"

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "limit": self.limit,
            "signal": self.signal,
            "duration_s": round(self.duration_s, 3),
            "dropped_bytes": self.dropped_bytes,
            "network": self.network,
            "uid": self.uid,
        }


# The child. It reads the code from stdin and forks: the parent half supervises (a
# deadline of its own; exit status 128+N for signal N), the child half sets the limits,
# drops privileges, and runs the code as __main__ with tracebacks that name only "<code>".
# With namespaces, directories the dropped uid could not enter on the way to the
# interpreter (a Python under /root) are covered by a tmpfs that shows only that way.
_RUNNER = r"""
import ctypes, json, linecache, os, resource, signal, socket, sys, traceback, types
config = json.loads(sys.argv[1])
source = sys.stdin.buffer.read().decode("utf-8", "replace")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
libc = ctypes.CDLL(None, use_errno=True)
def check(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
for hidden, entries in config["expose"].items():
    original = os.open(hidden, os.O_PATH | os.O_DIRECTORY)
    check(libc.mount(b"tmpfs", hidden.encode(), b"tmpfs", 6, b"mode=755,size=64k"))  # nosuid, nodev
    for entry in entries:
        os.mkdir(os.path.join(hidden, entry))
        check(libc.mount(f"/proc/self/fd/{original}/{entry}".encode(), os.path.join(hidden, entry).encode(), None, 4096 | 16384, None))
pid = os.fork()
if pid:
    signal.signal(signal.SIGALRM, lambda *_: os.killpg(0, signal.SIGKILL))
    signal.alarm(config["deadline"])
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os._exit(status if status >= 0 else 128 - status)
for name, value in config["rlimits"].items():
    resource.setrlimit(getattr(resource, name), tuple(value))
if config["uid"] is not None:
    os.setgroups([])
    os.setgid(config["uid"])
    os.setuid(config["uid"])
check(libc.prctl(38, 1, 0, 0, 0))  # PR_SET_NO_NEW_PRIVS: setuid programs gain nothing
if config["block_sockets"]:
    import _socket
    class GuardedSocket(socket.socket):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
                raise PermissionError("network access is disabled in this sandbox")
            super().__init__(family, type, proto, fileno)
    socket.socket = socket.SocketType = _socket.socket = _socket.SocketType = GuardedSocket
linecache.cache["<code>"] = (len(source), None, source.splitlines(True), "<code>")
sys.argv, sys.path[:0] = ["<code>"], [""]  # -I left the working directory off the path
main = sys.modules["__main__"] = types.ModuleType("__main__")  # so pickle finds user functions
try:
    exec(compile(source, "<code>", "exec"), main.__dict__)
except SystemExit:
    raise
except BaseException as exc:
    traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
    sys.exit(1)
"""
_PROBE_UID = UID_BASE - 1
_PROBE_CODE = "import multiprocessing, os, sysconfig\nfor path in set(sysconfig.get_paths().values()):\n    os.path.isdir(path) and os.listdir(path)"


@dataclass(frozen=True)
class Isolation:
    """How runs are isolated on this machine, found once by trying."""

    prefix: tuple[str, ...] = ()  # the unshare command, or () without namespaces
    drop_privileges: bool = False  # root: each sandbox runs as its own uid
    expose: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (hidden directory, entries to show)

    @property
    def network(self) -> str:
        return "namespace" if self.prefix else "sockets-blocked"

    def command(self, python: str, *, rlimits: dict, uid: int | None, deadline: int) -> list[str]:
        config = {
            "rlimits": rlimits,
            "uid": uid if self.drop_privileges else None,
            "block_sockets": not self.prefix,
            "deadline": deadline,
            "expose": {hidden: list(entries) for hidden, entries in self.expose},
        }
        return [*self.prefix, python, "-I", "-u", "-c", _RUNNER, json.dumps(config)]


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
    return [path for path in json.loads(probe.stdout) if path]


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
    always a dropped uid (with the interpreter exposed if it lives in a private directory).
    As root with no uid that can run `python`, the result has `drop_privileges=False`
    and `Sandbox` refuses to run."""
    root = os.geteuid() == 0
    unshare = shutil.which("unshare") if namespaces else None
    candidates = []
    if unshare and root:
        candidates.append(Isolation((unshare, *NAMESPACES), True, hidden_ancestors(_interpreter_paths(python))))
    elif unshare:
        candidates.append(Isolation((unshare, "--user", "--map-root-user", *NAMESPACES)))
    candidates.append(Isolation((), root))
    for isolation in candidates:
        if _works(isolation, python):
            return isolation
    return Isolation()


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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Capture:
    """The first and last bytes of a stream, and a count of the rest."""

    def __init__(self, keep: int):
        keep = max(keep, 2)  # a tail of 0 would slice as [-0:], everything
        self.head_size, self.tail_size = keep // 2, keep - keep // 2
        self.head, self.tail, self.total = b"", b"", 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_size - len(self.head)
        if room > 0:
            self.head, data = self.head + data[:room], data[room:]
        if data:
            self.tail = (self.tail + data)[-self.tail_size :]

    @property
    def dropped(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head, tail = self.head.decode(errors="replace"), self.tail.decode(errors="replace")
        return f"{head}\n... [{self.dropped} bytes dropped] ...\n{tail}" if self.dropped else head + tail


class _Protocol(asyncio.SubprocessProtocol):
    """Collects both pipes without buffering more than the capture keeps."""

    def __init__(self, limits: SandboxLimits):
        loop = asyncio.get_running_loop()
        self.streams = {1: _Capture(limits.output_bytes), 2: _Capture(limits.output_bytes)}
        self.kill_bytes = limits.output_kill_bytes
        self.exited = loop.create_future()
        self.closed = {1: loop.create_future(), 2: loop.create_future()}
        self.over = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.streams[fd].add(data)
        if self.streams[1].total + self.streams[2].total > self.kill_bytes and not self.over.done():
            self.over.set_result(None)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd in self.closed and not self.closed[fd].done():
            self.closed[fd].set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _remove_tree(path: str) -> None:
    try:
        shutil.rmtree(path)
    except OSError:  # not root, and the code chmod-ed its own directories to 000
        for parent, directories, _files in os.walk(path):
            for name in directories:
                if not os.path.islink(os.path.join(parent, name)):
                    os.chmod(os.path.join(parent, name), 0o700)
        shutil.rmtree(path, ignore_errors=True)


def _allocate_uid() -> int:
    start = UID_BASE + (os.getpid() % 100_000) * UIDS_PER_PROCESS
    uid = next((u for u in range(start, start + UIDS_PER_PROCESS) if u not in _uids_in_use), None)
    if uid is None:
        raise SandboxError(f"more than {UIDS_PER_PROCESS} sandboxes open at once in one process")
    _uids_in_use.add(uid)
    return uid


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
        self.uid = _allocate_uid() if os.geteuid() == 0 else None
        self.workdir = tempfile.mkdtemp(prefix="lmgym-sandbox-")
        if self.uid is not None:
            os.chown(self.workdir, self.uid, self.uid)
        self.closed = False
        self.isolation: Isolation | None = None
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
        return isolation

    async def _run(self, code: str, timeout_s: float) -> ExecutionResult:
        isolation = await self.prepare()
        rlimits = self.limits.rlimits()
        if not isolation.drop_privileges and not isolation.prefix:  # RLIMIT_NPROC counts all our processes
            in_use = sum(threads for _, threads in await asyncio.to_thread(processes_of, os.getuid()))
            rlimits["RLIMIT_NPROC"] = (in_use + self.limits.processes,) * 2
        argv = isolation.command(self.python, rlimits=rlimits, uid=self.uid, deadline=math.ceil(timeout_s) + 2)
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(self.limits), *argv,
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
            _kill_group(pgid)  # what is left of the tree (all of it when we stopped it)
            self._pgids.discard(pgid)
            if self.uid is not None:  # even a process that left the group
                await asyncio.to_thread(kill_uid, self.uid)
            # Pipes may hold a little more output after the exit; a process that escaped the
            # group (possible only without namespaces, when not root) may hold them open.
            await asyncio.wait([protocol.exited, *protocol.closed.values()], timeout=2)
            transport.close()
        duration = time.monotonic() - started
        return self._result(protocol, transport.get_returncode(), limit, duration, timeout_s, isolation)

    def _result(self, protocol, returncode, limit, duration, timeout_s, isolation) -> ExecutionResult:
        out, err = protocol.streams[1], protocol.streams[2]
        stderr = err.text()
        last_line = stderr.rstrip().rsplit("\n", 1)[-1]
        exit_code = None if limit else (128 - returncode if returncode < 0 else returncode)  # killed from outside
        signal_name = None
        if exit_code is not None and 128 < exit_code <= 128 + 64:
            signal_name = signal.Signals(exit_code - 128).name if exit_code - 128 in signal.valid_signals() else None
        if limit is None and signal_name == "SIGXCPU":
            limit = "cpu"
        elif limit is None and exit_code == 1 and last_line.startswith("MemoryError"):
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
        )

    async def close(self) -> None:
        """Kill whatever still runs, delete the working directory. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        for pgid in list(self._pgids):
            _kill_group(pgid)
        if self.uid is not None:
            await asyncio.to_thread(kill_uid, self.uid)
        await asyncio.to_thread(_remove_tree, self.workdir)
        if self.uid is not None:
            _uids_in_use.discard(self.uid)
