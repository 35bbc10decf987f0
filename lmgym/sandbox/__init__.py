"""lmgym.sandbox: run model-written Python on this machine, in a child process, with limits.

Why a package of its own: confining code is a concept of its own (Linux namespaces,
cgroups, seccomp, uids, rlimits), used by environments (`PythonEnv`, `python-tests`) but
knowing nothing of them, so it sits below `lmgym.envs` and imports only `lmgym.errors`.
Its modules, one concept each: `limits` and `result` (what a run may use, how it ended),
`isolation` (which protections work here, and the child's command line), `seccomp`,
`cgroups`, `processes` (uids, killing what is left), `output` (head and tail capture),
`runner.py` (the child's program, run by path) and `sandbox` (the `Sandbox` itself).

What it guarantees:

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

from lmgym.errors import SandboxError
from lmgym.sandbox.cgroups import SandboxCgroup, cgroup_parents, detect_cgroups
from lmgym.sandbox.isolation import Isolation, detect_isolation, entries_below, hidden_ancestors, private_dirs
from lmgym.sandbox.limits import SandboxLimits
from lmgym.sandbox.processes import kill_uid, processes_of
from lmgym.sandbox.result import ExecutionResult
from lmgym.sandbox.sandbox import Sandbox
from lmgym.sandbox.seccomp import user_namespace_filter

__all__ = [
    "ExecutionResult",
    "Isolation",
    "Sandbox",
    "SandboxCgroup",
    "SandboxError",
    "SandboxLimits",
    "cgroup_parents",
    "detect_cgroups",
    "detect_isolation",
    "entries_below",
    "hidden_ancestors",
    "kill_uid",
    "private_dirs",
    "processes_of",
    "user_namespace_filter",
]
