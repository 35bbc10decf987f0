"""`Sandbox`: run model-written Python on this machine, in a child process, with limits.

One `Sandbox` per rollout owns a fresh working directory; every `run(code)` starts a new
interpreter in it, so files persist between the calls of a rollout but nothing else does
(no process outlives its call). `await sandbox.close()` kills what is left and deletes
the directory. No cloud account, container runtime or extra package is needed.

What each call gets, and what that prevents:

- **Time**: a wall-clock timeout kills the whole process tree; a CPU-time rlimit and a
  deadline inside the runner are back-ups, so a sandbox dies even if lmgym itself crashed.
- **Memory**: as root where a cgroup memory controller can be used (cgroup v2, or v1's
  memory hierarchy as on hybrid hosts), one cgroup per sandbox holds every process of it:
  `memory_mb` bounds their resident memory *together* (swap included; files in its
  private /tmp count), and the kernel kills the largest process past it. Otherwise an
  address-space rlimit per process (`MemoryError`), which six processes can each use in
  full. `memory_limit="cgroup"` or `"per-process"` in every result says which applied.
  The cgroup is made under lmgym's own cgroup and removed when the sandbox closes. With
  cgroup v2, lmgym's cgroup must be able to hand the controller down: already delegated,
  or lmgym its only process (a container's PID 1, `systemd-run --scope -p Delegate=yes`),
  when lmgym moves itself into a leaf `lmgym-main` below it first.
- **File size, processes**: rlimits set in the child before the code runs (file size →
  `OSError: File too large`; process count → `fork` fails, so a fork bomb stalls instead
  of taking the machine); with a cgroup, also `pids.max` on the sandbox as a whole.
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
- **Unix sockets and shared scratch space**: a network namespace does not cover sockets
  that live at a path (the system D-Bus socket, /run/postgresql, /tmp/.X11-unix), so
  with namespaces the code also gets its own mount namespace where /tmp, /var/tmp,
  /dev/shm and /run (/var/run) are fresh, empty tmpfs (each at most `memory_mb`) showing
  only the working directory and the interpreter: host sockets there cannot be reached,
  and nothing written there outlives the call. Without namespaces they are reachable.
- **User namespaces**: a seccomp filter (written here, no library) makes `unshare` and
  `clone` with CLONE_NEWUSER fail with EPERM (and `clone3` with ENOSYS, so that libc
  falls back to `clone`), so `unshare -r` cannot give the code a root of its own and
  the kernel surface that comes with it. `user_namespaces="denied"` in every result, or
  `"allowed"` where the kernel has no seccomp filters.
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
  run code as root. When not root, the code is root of a user namespace of its own with
  every capability dropped, so it cannot unmount its private /tmp.

What it does NOT prevent (it is a guard for honest mistakes and casual misbehaviour, not
a security boundary against a determined attacker; use gVisor or Firecracker for that):

- reading world-readable files of the host (the repository, /etc, the virtualenv);
- writing world-writable places other than the private ones above; written files stay;
- reaching unix sockets at other world-writable paths;
- filling the disk with many files, each under the file-size limit;
- CPU and disk-bandwidth contention with the rest of the machine;
- kernel exploits, and side channels.
- When not root, the code runs as your own user: it can read and write whatever you can
  (with namespaces, a user namespace maps you to root, but the files are still yours),
  and the memory limit is per process. Without namespaces it can also read
  `/proc/PID/environ` of your other processes, reach host unix sockets and write /tmp,
  and a process that leaves the process group (`setsid`) survives its call.

Measured on the development machine (root in a VM, util-linux 2.38, Python under /root):
namespaces, the uid drop, the /root tmpfs, the private /tmp and /run and the seccomp
filter all work, and a call costs about 30 ms more than a bare `python -c pass` (the
mounts and the filter add less than the noise of a shared 2-core machine, ~10 ms). Its
cgroups are hybrid: v1 memory and pids hierarchies (used), v2 with hugetlb only. A GPU
machine of the same provider has pure cgroup v2 where lmgym's cgroup shares processes
with others, so it cannot delegate (per-process limit); run there as the only process of
its cgroup, lmgym moved itself into a leaf and four 100 MB processes in a 256 MB sandbox
lost two to the OOM killer, as on v1. As an unprivileged user (uid 65534) the user
namespace path works on the development machine too: no capabilities left, so `umount
/tmp` fails, and `unshare -r` fails.
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
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from lmgym.errors import SandboxError

logger = logging.getLogger(__name__)

UID_BASE = 2_000_000_000  # far above any real account; one uid per open sandbox
UIDS_PER_PROCESS = 1000
_uids_in_use: set[int] = set()

NAMESPACES = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run")
"""Covered by a fresh tmpfs in the sandbox's mount namespace: where host sockets and
scratch files live (/var/run is usually a link to /run and then covered once)."""
CGROUP_PREFIX = "lmgym-sandbox-"
_LEAF = "lmgym-main"  # cgroup v2: where lmgym moves itself so that its cgroup can delegate


@dataclass(frozen=True)
class SandboxLimits:
    """What one `run` may use."""

    timeout_s: float = 10.0
    """Wall-clock seconds before the whole process tree is killed."""
    cpu_s: float | None = None
    """CPU seconds per process (RLIMIT_CPU); None means `timeout_s + 1`, a back-up."""
    memory_mb: int = 512
    """Memory of all the sandbox's processes together (a cgroup), or, where no cgroup can
    be used, address space per process (RLIMIT_AS); also the size of each private tmpfs."""
    file_size_mb: int = 10
    """Largest file a process may write (RLIMIT_FSIZE)."""
    processes: int = 32
    """Processes and threads of the sandbox's uid (RLIMIT_NPROC; and pids.max of its cgroup)."""
    output_bytes: int = 16_384
    """Bytes of each of stdout and stderr shown; the middle beyond that is dropped."""
    output_kill_bytes: int = 10_000_000
    """Total bytes printed after which the program is killed."""

    def rlimits(self, *, memory_per_process: bool = True) -> dict[str, tuple[int, int]]:
        """`memory_per_process=False` where a cgroup bounds memory: an address-space limit
        would then only break programs that reserve more than they touch."""
        cpu = math.ceil(self.cpu_s if self.cpu_s is not None else self.timeout_s + 1)
        limits = {
            "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL one second on
            "RLIMIT_AS": (self.memory_mb << 20,) * 2,
            "RLIMIT_FSIZE": (self.file_size_mb << 20,) * 2,
            "RLIMIT_NPROC": (self.processes,) * 2,
            "RLIMIT_CORE": (0, 0),
        }
        if not memory_per_process:
            del limits["RLIMIT_AS"]
        return limits


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
    memory_limit: str = ""
    """"cgroup" (all processes together) or "per-process" (address space of each)."""
    user_namespaces: str = ""
    """"denied" (seccomp) or "allowed"."""
    oom_kills: int = 0
    """Processes the kernel killed at the sandbox's cgroup memory limit during the run."""

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
        shared = "one memory limit for all processes together"
        if self.oom_kills and not self.signal:
            parts.append(f"[out of memory: the kernel killed {self.oom_kills} of its processes, {shared}]")
        if self.limit == "timeout":
            parts.append(f"[killed: still running after {self.timeout_s:g} s]")
        elif self.limit == "output":
            parts.append("[killed: printed too much output]")
        elif self.signal:
            why = ": CPU time limit" if self.limit == "cpu" else f": out of memory, {shared}" if self.oom_kills else ""
            parts.append(f"[killed by {self.signal}{why}]")
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
            "memory_limit": self.memory_limit,
            "user_namespaces": self.user_namespaces,
            "oom_kills": self.oom_kills,
        }


# The child. It joins the sandbox's cgroup, reads the code from stdin and forks: the
# parent half supervises (a deadline of its own; exit status 128+N for signal N), the
# child half sets the limits, drops privileges (and, as root of a user namespace, every
# capability), installs the seccomp filter, and runs the code as __main__ with
# tracebacks that name only "<code>". With namespaces, the private directories (/tmp,
# /run, ...) and the directories the dropped uid could not enter on the way to the
# interpreter (a Python under /root) are covered by a tmpfs showing only the entries
# bound back from the original (the way to the interpreter, the working directory).
_RUNNER = r"""
import ctypes, json, linecache, os, resource, signal, socket, struct, sys, traceback, types
config = json.loads(sys.argv[1])
for procs in config["cgroups"]:
    with open(procs, "w") as file:
        file.write("0")  # this process; what it forks stays in the cgroup
source = sys.stdin.buffer.read().decode("utf-8", "replace")
os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
libc = ctypes.CDLL(None, use_errno=True)
def check(result):
    if result != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
for directory, entries, options in config["mounts"]:
    original = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    check(libc.mount(b"tmpfs", directory.encode(), b"tmpfs", 6, options.encode()))  # nosuid, nodev
    for entry in entries:
        source_path, target = f"/proc/self/fd/{original}/{entry}", os.path.join(directory, entry)
        if os.path.isdir(source_path):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
        check(libc.mount(source_path.encode(), target.encode(), None, 4096 | 16384, None))  # bind, recursive
    os.close(original)  # left open, it would lead back to what the tmpfs covers
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
check(libc.prctl(38, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)))  # PR_SET_NO_NEW_PRIVS
if os.geteuid() == 0:  # root of its own user namespace: it could unmount the private /tmp
    for capability in range(int(open("/proc/sys/kernel/cap_last_cap").read()) + 1):
        check(libc.prctl(24, ctypes.c_ulong(capability), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)))  # PR_CAPBSET_DROP
    check(libc.capset((ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()))  # none effective, permitted, inheritable
if config["seccomp"]:
    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    instructions = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in config["seccomp"]))
    program = Program(len(config["seccomp"]), ctypes.addressof(instructions))
    check(libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(program), ctypes.c_ulong(0), ctypes.c_ulong(0)))  # PR_SET_SECCOMP, filter
if config["block_sockets"]:  # socket.socket.__init__ calls _socket.socket.__init__: guard that one
    import _socket
    unguarded = _socket.socket
    class GuardedSocket(unguarded):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
                raise PermissionError("network access is disabled in this sandbox")
            unguarded.__init__(self, family, type, proto, fileno)
    _socket.socket = GuardedSocket
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

# seccomp: (audit arch, clone, unshare) per machine; clone3 is 435 on both.
_SYSCALLS = {"x86_64": (0xC000_003E, 56, 272), "aarch64": (0xC000_00B7, 220, 97)}
_CLONE3, _CLONE_NEWUSER = 435, 0x1000_0000
_RET_ALLOW, _RET_ERRNO = 0x7FFF_0000, 0x0005_0000
_EPERM, _ENOSYS = 1, 38


def user_namespace_filter(machine: str) -> tuple[tuple[int, int, int, int], ...]:
    """A classic-BPF seccomp program (code, jt, jf, k per instruction) that fails
    `unshare` and `clone` with CLONE_NEWUSER (EPERM) and `clone3` (ENOSYS: its flags are
    out of a filter's reach, and libc then falls back to `clone`); empty for a machine
    whose syscall numbers are not known here. Other ABIs (32-bit, x32) get ENOSYS/EPERM."""
    if machine not in _SYSCALLS:
        return ()
    arch, clone, unshare = _SYSCALLS[machine]
    load, jump_eq, jump_ge, jump_set, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    return (
        (load, 0, 0, 4),  # 0: seccomp_data.arch
        (jump_eq, 1, 0, arch),  # 1: native → 3
        (ret, 0, 0, _RET_ERRNO | _ENOSYS),  # 2
        (load, 0, 0, 0),  # 3: seccomp_data.nr
        (jump_ge, 7, 0, 0x4000_0000),  # 4: x32 → 12
        (jump_eq, 7, 0, _CLONE3),  # 5: → 13
        (jump_eq, 2, 0, unshare),  # 6: → 9
        (jump_eq, 1, 0, clone),  # 7: → 9
        (ret, 0, 0, _RET_ALLOW),  # 8
        (load, 0, 0, 16),  # 9: low half of args[0], the flags of both
        (jump_set, 1, 0, _CLONE_NEWUSER),  # 10: → 12
        (ret, 0, 0, _RET_ALLOW),  # 11
        (ret, 0, 0, _RET_ERRNO | _EPERM),  # 12
        (ret, 0, 0, _RET_ERRNO | _ENOSYS),  # 13
    )


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


# -- cgroups: one per sandbox, under lmgym's own ------------------------------------------

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
            _kill_group(pgid)
        if self.uid is not None:
            await asyncio.to_thread(kill_uid, self.uid)
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill_all)
            await asyncio.to_thread(self.cgroup.remove)
        await asyncio.to_thread(_remove_tree, self.workdir)
        if self.uid is not None:
            _uids_in_use.discard(self.uid)
