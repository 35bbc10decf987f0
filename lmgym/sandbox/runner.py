"""The child's program: confine this process, then run the model's code as __main__.

`Isolation.command` runs this file by path (`python -I -u runner.py CONFIG`) and never
imports it: it must run on whatever interpreter a sandbox is given, lmgym installed there
or not, so it uses the standard library only. CONFIG is the JSON `Isolation.command`
writes (cgroups, mounts, deadline, rlimits, uid, seccomp, block_sockets); the code comes
on stdin.

It joins the sandbox's cgroup, reads the code from stdin and forks: the parent half
supervises (a deadline of its own; exit status 128+N for signal N), the child half sets
the limits, drops privileges (and, as root of a user namespace, every capability),
installs the seccomp filter, and runs the code as __main__ with tracebacks that name
only "<code>". With namespaces, the private directories (/tmp, /run, ...) and the
directories the dropped uid could not enter on the way to the interpreter (a Python
under /root) are covered by a tmpfs showing only the entries bound back from the
original (the way to the interpreter, the working directory).
"""

import ctypes
import json
import linecache
import os
import resource
import signal
import socket
import struct
import sys
import traceback
import types


def check(result):
    """Raise the errno of a libc call that failed."""
    if result != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def join_cgroups(procs_files):
    for procs in procs_files:
        with open(procs, "w") as file:
            file.write("0")  # this process; what it forks stays in the cgroup


def cover_with_tmpfs(libc, mounts):
    """Each directory becomes a fresh tmpfs showing only `entries`, bound back from the original."""
    for directory, entries, options in mounts:
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


def supervise(pid, deadline):
    """The parent half: wait for the code's process, kill the group past `deadline`
    seconds, and exit with its status (128+N for signal N)."""
    signal.signal(signal.SIGALRM, lambda *_: os.killpg(0, signal.SIGKILL))
    signal.alarm(deadline)
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    os._exit(status if status >= 0 else 128 - status)


def confine(libc, config):
    """Limits, the dropped uid, no new privileges, no capabilities, the seccomp filter."""
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
        install_seccomp(libc, config["seccomp"])


def install_seccomp(libc, instructions):
    """Load the classic-BPF program (code, jt, jf, k per instruction) of `seccomp.py`."""

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    packed = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in instructions))
    program = Program(len(instructions), ctypes.addressof(packed))
    check(libc.prctl(22, ctypes.c_ulong(2), ctypes.byref(program), ctypes.c_ulong(0), ctypes.c_ulong(0)))  # PR_SET_SECCOMP, filter


def block_sockets():
    """Refuse internet sockets in Python (where no network namespace is to be had).
    socket.socket.__init__ calls _socket.socket.__init__: guard that one."""
    import _socket

    unguarded = _socket.socket

    class GuardedSocket(unguarded):
        def __init__(self, family=-1, type=-1, proto=-1, fileno=None):
            if fileno is None and family in (-1, socket.AF_INET, socket.AF_INET6):
                raise PermissionError("network access is disabled in this sandbox")
            unguarded.__init__(self, family, type, proto, fileno)

    _socket.socket = GuardedSocket


def run_code(source):
    """Run `source` as a fresh __main__; a traceback shows only the code's own frames."""
    linecache.cache["<code>"] = (len(source), None, source.splitlines(True), "<code>")
    sys.argv, sys.path[:0] = ["<code>"], [""]  # -I left the working directory off the path
    main = sys.modules["__main__"] = types.ModuleType("__main__")  # so pickle finds user functions
    try:
        exec(compile(source, "<code>", "exec"), main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)  # not this frame
        sys.exit(1)


def main():
    config = json.loads(sys.argv[1])
    join_cgroups(config["cgroups"])
    source = sys.stdin.buffer.read().decode("utf-8", "replace")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    libc = ctypes.CDLL(None, use_errno=True)
    cover_with_tmpfs(libc, config["mounts"])
    pid = os.fork()
    if pid:
        supervise(pid, config["deadline"])
    confine(libc, config)
    if config["block_sockets"]:
        block_sockets()
    run_code(source)


if __name__ == "__main__":
    main()
