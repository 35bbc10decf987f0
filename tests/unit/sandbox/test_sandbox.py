"""Sandbox: what model-written code can and cannot do, each case bounded in time.

The security tests run in every isolation mode this machine offers (namespaces, and
blocked sockets without namespaces) and assert what `lmgym/sandbox/` documents for
the mode it reports, so a test fails if a protection silently stops applying.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lmgym.sandbox import (
    ExecutionResult,
    Sandbox,
    SandboxError,
    SandboxLimits,
    cgroup_parents,
    detect_cgroups,
    detect_isolation,
    entries_below,
    hidden_ancestors,
    processes_of,
    user_namespace_filter,
)

FAST = SandboxLimits(timeout_s=5)


async def bounded(awaitable, seconds: float = 30):
    """No test may hang: every sandbox call is wrapped in a hard bound."""
    return await asyncio.wait_for(awaitable, seconds)


async def open_sandbox(mode: str, limits: SandboxLimits = FAST) -> Sandbox:
    """A prepared sandbox in `mode`; skips when this machine cannot provide that mode."""
    # as root without namespaces, the interpreter must be readable by the sandbox's uid
    others = [p for p in (shutil.which("python3"), "/usr/bin/python3") if p and os.path.exists(p)]
    for python in [sys.executable, *others] if mode == "no-namespaces" else [sys.executable]:
        sandbox = Sandbox(limits, namespaces=mode == "default", python=python)
        try:
            await sandbox.prepare()
            return sandbox
        except SandboxError as exc:
            reason = str(exc)
            await sandbox.close()
    pytest.skip(f"no {mode} sandbox here: {reason}")


@pytest.fixture(params=["default", "no-namespaces"])
async def sandbox(request):
    box = await open_sandbox(request.param)
    yield box
    await box.close()


def run(box: Sandbox, code: str, seconds: float = 30) -> ExecutionResult:
    return bounded(box.run(code), seconds)


def isolated_user(result: ExecutionResult) -> bool:
    """Runs as its own uid (the parent is root), so file permissions apply."""
    return result.uid is not None


# -- what it does ----------------------------------------------------------------------


async def test_stdout_stderr_and_exit_codes(sandbox):
    result = await run(sandbox, "print(6 * 7)")
    assert (result.stdout, result.stderr, result.exit_code, result.limit) == ("42\n", "", 0, None)
    assert result.to_text() == "42" and result.metadata["network"] in ("namespace", "sockets-blocked")

    result = await run(sandbox, "import sys; print('partial'); sys.exit(3)")
    assert result.exit_code == 3 and result.to_text() == "partial\n[exit code 3]"

    result = await run(sandbox, "def f():\n    return 1 / 0\nf()")
    assert result.exit_code == 1 and result.stderr.startswith("Traceback")
    assert 'File "<code>", line 2, in f' in result.stderr and "ZeroDivisionError" in result.stderr
    assert "json.loads" not in result.stderr  # the runner's own frames are not shown

    result = await run(sandbox, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert result.exit_code == 128 + 15 and result.signal == "SIGTERM" and "[killed by SIGTERM]" in result.to_text()
    assert (await run(sandbox, "")).to_text() == "(no output)"


async def test_files_persist_between_calls_and_close_removes_everything():
    box = await open_sandbox("default")
    await run(box, "open('notes.txt', 'w').write('kept'); import os; os.mkdir('locked'); os.chmod('locked', 0)")
    result = await run(box, "import os; print(open('notes.txt').read(), os.getcwd() == os.environ['HOME'])")
    assert result.stdout == "kept True\n"
    workdir = Path(box.workdir)
    assert workdir.is_dir()
    await box.close()
    await box.close()  # twice is fine
    assert not workdir.exists()
    with pytest.raises(SandboxError, match="closed"):
        await box.run("print(1)")


async def test_standard_library_and_multiprocessing_work():
    async with await open_sandbox("default") as box:
        code = "import multiprocessing as mp, json\ndef square(x): return x * x\nwith mp.Pool(2) as pool: print(json.dumps(pool.map(square, range(4))))"
        result = await run(box, code)
    assert result.stdout == "[0, 1, 4, 9]\n", result.to_text()


async def test_concurrent_sandboxes_run_at_once_apart_from_each_other():
    boxes = [await open_sandbox("default") for _ in range(4)]
    try:
        started = time.monotonic()
        results = await bounded(asyncio.gather(*(b.run(f"import time; time.sleep(1); open('id', 'w').write('{i}'); print(open('id').read())") for i, b in enumerate(boxes))))
        elapsed = time.monotonic() - started
        assert [r.stdout for r in results] == ["0\n", "1\n", "2\n", "3\n"]
        assert elapsed < 3.5, f"4 sandboxes sleeping 1 s took {elapsed:.1f} s: they did not run concurrently"
        assert len({b.workdir for b in boxes}) == 4
        if boxes[0].uid is not None:
            assert len({b.uid for b in boxes}) == 4  # each its own uid and process count
    finally:
        for box in boxes:
            await box.close()


async def test_long_output_shows_head_and_tail_with_a_marker():
    limits = SandboxLimits(timeout_s=5, output_bytes=1000)
    async with await open_sandbox("default", limits) as box:
        result = await run(box, "print('HEAD' + 'x' * 100_000 + 'TAIL')")
    assert result.stdout.startswith("HEADxxx") and result.stdout.endswith("xxxTAIL\n")
    assert "[99009 bytes dropped]" in result.stdout and result.dropped_bytes == 99_009
    assert result.limit is None and result.exit_code == 0


# -- what it prevents --------------------------------------------------------------------


async def test_cannot_reach_a_server_on_the_host_loopback(sandbox):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'leak')\n"
            "    print('CONNECTED')\n"
            "except OSError as exc:\n"
            "    print(type(exc).__name__, exc.errno, exc)\n"
        )
        result = await run(sandbox, code)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody ever connected
    finally:
        server.close()
    assert "CONNECTED" not in result.stdout and result.exit_code == 0
    if result.network == "namespace":  # an empty network namespace: even loopback is down
        assert result.stdout.startswith("OSError 101 ")
    else:
        assert result.stdout.startswith("PermissionError None network access is disabled in this sandbox")


async def test_parent_environment_is_not_visible(sandbox, monkeypatch):
    monkeypatch.setenv("LMGYM_TEST_SECRET", "sk-hunter2")
    code = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "print(any('hunter2' in v for v in os.environ.values()))\n"
        "try:\n"
        f"    print(open('/proc/{os.getpid()}/environ').read())\n"
        "except OSError as exc:\n"
        "    print('environ of the parent:', type(exc).__name__)\n"
    )
    result = await run(sandbox, code)
    names, leaked, parent = result.stdout.splitlines()[:3]
    assert names == "['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE', 'PYTHONIOENCODING', 'TMPDIR', 'USER']"
    assert leaked == "False"
    if result.network == "namespace" or isolated_user(result):
        # other PID namespace: the parent is not in /proc; other uid: its environ is private
        assert parent in ("environ of the parent: FileNotFoundError", "environ of the parent: PermissionError")
        assert "hunter2" not in result.to_text()
    else:  # documented: without namespaces and not root, /proc/PID/environ of your processes is readable
        assert not parent.startswith("environ of the parent:")


async def test_fork_bomb_is_contained_and_the_machine_recovers(sandbox):
    code = (
        "import os\n"
        "reported = False\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError as exc:\n"
        "        if not reported:\n"
        "            print('fork failed:', exc, flush=True)\n"
        "            reported = True\n"
    )
    started = time.monotonic()
    result = await bounded(sandbox.run(code, timeout_s=1))
    assert result.limit == "timeout" and result.exit_code is None
    assert time.monotonic() - started < 1 + 5
    assert "fork failed: [Errno 11] Resource temporarily unavailable" in result.stdout  # RLIMIT_NPROC
    if sandbox.uid is not None:
        assert processes_of(sandbox.uid) == []
    assert (await run(sandbox, "print('still fine')")).stdout == "still fine\n"


def memory_cgroups_usable() -> bool:
    """Root, and a memory controller this process can give a child cgroup: then the
    sandbox must limit memory per sandbox, not per process."""
    return os.geteuid() == 0 and bool(cgroup_parents())


async def test_allocating_8_gb_fails_at_the_memory_limit(sandbox):
    result = await run(sandbox, "block = bytearray(8 * 2**30)\nprint('allocated')")
    assert result.limit == "memory" and "allocated" not in result.stdout
    if result.memory_limit == "cgroup":  # touching the pages: the kernel kills it at the sandbox's limit
        assert (result.exit_code, result.signal, result.oom_kills) == (137, "SIGKILL", 1)
        assert result.to_text() == "[killed by SIGKILL: out of memory, one memory limit for all processes together]"
    else:  # the address-space rlimit refuses the allocation
        assert result.exit_code == 1 and result.stderr.rstrip().endswith("MemoryError")


SEVERAL_PROCESSES_TOUCH_100_MB = """
import json, os, time
children = []
for _ in range(4):
    pid = os.fork()
    if pid == 0:
        block = bytearray(100 * 2**20)  # zero-filled: every page is touched
        time.sleep(0.8)  # so that all four hold theirs at once
        os._exit(0)
    children.append(pid)
print(json.dumps([os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]))
"""


@pytest.mark.parametrize("mode", ["default", "no-namespaces"])
async def test_memory_limit_holds_for_all_processes_together(mode):
    """Four processes of 100 MB each in a sandbox of 256 MB: with a cgroup the kernel kills
    some of them; with the per-process fallback all four get their 100 MB (documented)."""
    async with await open_sandbox(mode, SandboxLimits(timeout_s=20, memory_mb=256)) as box:
        result = await run(box, SEVERAL_PROCESSES_TOUCH_100_MB)
        directories = box.cgroup.directories if box.cgroup else ()
        assert all(os.path.isdir(d) for d in directories)
    assert result.exit_code == 0, result.to_text()
    statuses = json.loads(result.stdout.splitlines()[0])
    assert result.metadata["memory_limit"] == result.memory_limit
    if result.memory_limit == "per-process":
        assert statuses == [0, 0, 0, 0] and result.limit is None
        if not memory_cgroups_usable():
            pytest.skip("no memory cgroup can be used here (not root, or no memory controller to delegate): the limit is per process")
    assert memory_cgroups_usable(), "a memory cgroup can be used here, yet the limit was per process"
    assert result.memory_limit == "cgroup" and result.limit == "memory"
    assert -9 in statuses and result.oom_kills == statuses.count(-9) >= 1, statuses
    assert "[out of memory: the kernel killed" in result.to_text()
    assert not any(os.path.exists(d) for d in directories)  # removed when the sandbox closed


async def test_without_a_cgroup_each_process_gets_the_limit_and_every_result_says_so(monkeypatch):
    """The fallback of machines with no usable memory controller, taken here on purpose
    (where a cgroup can be used the tests above never reach it): an address-space limit
    on each process, and `memory_limit` saying "per-process"."""
    monkeypatch.setattr("lmgym.sandbox.sandbox.detect_cgroups", lambda python: ())
    async with await open_sandbox("default", SandboxLimits(timeout_s=20, memory_mb=256)) as box:
        together = await run(box, SEVERAL_PROCESSES_TOUCH_100_MB)
        one_too_large = await run(box, "block = bytearray(300 * 2**20)\nprint('allocated')")
        assert box.cgroup is None
    assert together.exit_code == 0 and json.loads(together.stdout) == [0, 0, 0, 0], together.to_text()
    assert together.memory_limit == together.metadata["memory_limit"] == "per-process" and together.oom_kills == 0
    assert one_too_large.limit == "memory" and "allocated" not in one_too_large.stdout
    assert one_too_large.stderr.rstrip().endswith("MemoryError") and one_too_large.metadata["memory_limit"] == "per-process"


async def test_the_cgroup_is_made_per_sandbox_and_removed_on_close():
    if not memory_cgroups_usable():
        pytest.skip("no memory cgroup can be used here (not root, or no memory controller to delegate)")
    boxes = [await open_sandbox("default", SandboxLimits(timeout_s=5, memory_mb=200, processes=7)) for _ in range(2)]
    try:
        first, second = (box.cgroup.directories for box in boxes)
        assert first != second and all(os.path.isdir(d) for d in first + second)
        limits = {f: Path(d, f).read_text().strip() for d in first for f in ("memory.max", "memory.limit_in_bytes", "pids.max") if Path(d, f).exists()}
        assert limits.get("memory.max", limits.get("memory.limit_in_bytes")) == str(200 << 20)
        assert limits.get("pids.max", "8") == "8"  # the processes plus the runner's supervisor
        result = await run(boxes[0], "print(open('/proc/self/cgroup').read())")
        assert os.path.basename(first[0]) in result.stdout
    finally:
        for box in boxes:
            await box.close()
    assert not any(os.path.exists(d) for d in first + second)


async def test_sandboxes_prepared_at_once_all_get_their_cgroup():
    """Rollouts open their sandboxes concurrently; the first detection of cgroups (a probe
    cgroup of a fixed name) must not make some of them fall back to per process."""
    if not memory_cgroups_usable():
        pytest.skip("no memory cgroup can be used here (not root, or no memory controller to delegate)")
    detect_cgroups.cache_clear()
    boxes = [Sandbox(FAST) for _ in range(4)]
    try:
        await bounded(asyncio.gather(*(box.prepare() for box in boxes)))
        assert [box.memory_limit for box in boxes] == ["cgroup"] * 4
    finally:
        for box in boxes:
            await box.close()


def test_cgroups_left_by_a_process_that_died_are_removed_at_the_next_start():
    if not memory_cgroups_usable():
        pytest.skip("no memory cgroup can be used here (not root, or no memory controller to delegate)")
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    left = [os.path.join(parent, f"lmgym-sandbox-{dead}-2000000000") for parent in cgroup_parents()]
    mine = [os.path.join(parent, f"lmgym-sandbox-{os.getpid()}-1") for parent in cgroup_parents()]
    for directory in left + mine:
        os.mkdir(directory)
    try:
        detect_cgroups.cache_clear()
        assert detect_cgroups(sys.executable) == cgroup_parents()
        assert not any(os.path.exists(d) for d in left) and all(os.path.isdir(d) for d in mine)
    finally:
        for directory in left + mine:
            if os.path.exists(directory):
                os.rmdir(directory)


UNIX_CLIENT = """
import socket
for address in ADDRESSES:
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(3)
    try:
        client.connect(address)
        client.sendall(b"leak")
        print("CONNECTED")
    except OSError as exc:
        print(type(exc).__name__)
"""


async def test_cannot_reach_host_unix_sockets(sandbox):
    """World-writable listening sockets in /tmp and /run (where D-Bus, databases and X11
    put theirs) and one in the abstract namespace: with namespaces none is reachable."""
    places = [d for d in ("/tmp", "/run") if os.path.isdir(d) and os.access(d, os.W_OK)]
    servers, addresses = [], []
    try:
        for place in places:
            path = os.path.join(place, f"lmgym-test-{os.getpid()}-{len(servers)}.sock")
            servers.append(socket.socket(socket.AF_UNIX))
            servers[-1].bind(path)
            os.chmod(path, 0o777)
            addresses.append(path)
            if os.path.dirname(os.path.realpath(sandbox.workdir)) == place:  # and by way of its working directory
                addresses.append(os.path.join("..", os.path.basename(path)))
        servers.append(socket.socket(socket.AF_UNIX))
        servers[-1].bind(f"\0lmgym-test-{os.getpid()}")
        addresses.append(f"\0lmgym-test-{os.getpid()}")
        for server in servers:
            server.listen()
            server.setblocking(False)
        result = await run(sandbox, f"ADDRESSES = {addresses!r}\n{UNIX_CLIENT}")
        accepted = 0
        for server in servers:
            while True:
                try:
                    server.accept()[0].close()
                    accepted += 1
                except BlockingIOError:
                    break
    finally:
        for server in servers:
            server.close()
        for path in addresses[:-1]:
            if os.path.isabs(path):
                os.unlink(path)
    outcomes = result.stdout.split()
    assert result.exit_code == 0 and len(outcomes) == len(addresses), result.to_text()
    if result.network == "namespace":  # a private /tmp and /run; the abstract namespace is the network's
        assert outcomes == ["FileNotFoundError"] * (len(addresses) - 1) + ["ConnectionRefusedError"] and accepted == 0
    else:  # documented: without namespaces host unix sockets are reachable
        assert outcomes == ["CONNECTED"] * len(addresses) and accepted == len(addresses)


UNMOUNT = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for directory in DIRECTORIES:
    for flags in (0, 2):  # plain, then MNT_DETACH
        failed = libc.umount2(directory.encode(), flags)
        print(directory, os.strerror(ctypes.get_errno()) if failed else "unmounted")
print(os.path.exists(MARKER))
"""


async def test_the_private_directories_cannot_be_unmounted_to_uncover_the_hosts(sandbox):
    """Unmounting the sandbox's own /run or /tmp would bring the host's sockets back into
    reach: its code has no privilege to (a dropped uid, or no capabilities left)."""
    if sandbox.isolation.network != "namespace":
        pytest.skip("without namespaces there is no private directory to unmount (documented: host sockets are reachable)")
    directories = list(sandbox.isolation.private)
    marker = Path(directories[0], f"lmgym-test-host-file-{os.getpid()}")
    marker.write_text("host")
    try:
        result = await run(sandbox, f"DIRECTORIES = {directories!r}\nMARKER = {str(marker)!r}\n{UNMOUNT}")
    finally:
        marker.unlink()
    assert result.exit_code == 0, result.to_text()
    lines = result.stdout.splitlines()
    assert lines[:-1] == [f"{directory} Operation not permitted" for directory in directories for _ in range(2)]
    assert lines[-1] == "False"  # still the sandbox's own, empty tmpfs


async def test_private_scratch_directories_show_only_the_working_directory(sandbox):
    marker = Path(tempfile.gettempdir(), f"lmgym-test-host-file-{os.getpid()}")
    marker.write_text("host")
    try:
        code = (
            "import json, os\n"
            f"print(os.path.exists({str(marker)!r}), os.getcwd() == os.environ['HOME'])\n"
            f"print(json.dumps(sorted(os.listdir({tempfile.gettempdir()!r}))))\n"
            "print(json.dumps(sorted(os.listdir('..'))))\n"
            f"open('/dev/shm/lmgym-test-{os.getpid()}', 'w').write('x')\n"
        )
        result = await run(sandbox, code)
    finally:
        marker.unlink()
    lines = result.stdout.splitlines()
    assert result.exit_code == 0, result.to_text()
    if result.network == "namespace":
        assert lines[0] == "False True"
        assert os.path.basename(sandbox.workdir) in json.loads(lines[1]) and len(json.loads(lines[1])) <= 2  # the workdir (and a venv there)
        assert lines[2] == lines[1]  # `..` of the working directory is the private /tmp too, not the host's
        assert not os.path.exists(f"/dev/shm/lmgym-test-{os.getpid()}")  # it was the sandbox's own
    else:  # documented: without namespaces /tmp is the host's
        assert lines[0] == "True True"
        os.unlink(f"/dev/shm/lmgym-test-{os.getpid()}")


UNSHARE_USER = """
import ctypes, os, shutil, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
print("unshare(CLONE_NEWUSER):", libc.unshare(0x10000000), os.strerror(ctypes.get_errno()))
if shutil.which("unshare"):
    child = subprocess.run(["unshare", "-r", "id", "-u"], capture_output=True, text=True)
    print("unshare -r:", child.returncode, (child.stdout + child.stderr).strip())
else:
    print("unshare -r: no unshare here")
thread = threading.Thread(target=lambda: print("threads work"))
thread.start()
thread.join()
print(subprocess.run(["sh", "-c", "echo subprocesses work"], capture_output=True, text=True).stdout.strip())
"""


def kernel_takes_seccomp_filters() -> bool:
    return "Seccomp:" in Path("/proc/self/status").read_text()  # CONFIG_SECCOMP


async def test_a_new_user_namespace_is_denied(sandbox):
    result = await run(sandbox, UNSHARE_USER)
    lines = result.stdout.splitlines()
    assert lines[2:] == ["threads work", "subprocesses work"], result.to_text()  # clone3 → ENOSYS → clone
    if result.user_namespaces == "allowed":
        assert not kernel_takes_seccomp_filters(), "seccomp works here, yet user namespaces were allowed"
        pytest.skip("this kernel takes no seccomp filter, so user namespaces cannot be denied")
    assert result.user_namespaces == "denied" and result.metadata["user_namespaces"] == "denied"
    assert lines[0] == "unshare(CLONE_NEWUSER): -1 Operation not permitted"
    assert lines[1] in ("unshare -r: 1 unshare: unshare failed: Operation not permitted", "unshare -r: no unshare here")


def test_the_user_namespace_filter_is_well_formed():
    """Every jump lands inside the program and it ends in a return, for each machine."""
    for machine in ("x86_64", "aarch64"):
        program = user_namespace_filter(machine)
        for index, (code, true_offset, false_offset, _k) in enumerate(program):
            if code & 0x07 == 0x05:  # BPF_JMP
                assert index + 1 + max(true_offset, false_offset) < len(program)
        assert program[-1][0] == 0x06
    assert user_namespace_filter("sparc") == ()


def test_entries_below_names_what_a_tmpfs_must_show_again():
    assert entries_below("/tmp", ["/tmp/lmgym-sandbox-x", "/tmp/venv/bin/python", "/usr/bin", "/tmpfoo/x", "/tmp"]) == ("lmgym-sandbox-x", "venv")


async def test_infinite_loop_is_killed_at_the_timeout(sandbox):
    started = time.monotonic()
    result = await bounded(sandbox.run("print('started', flush=True)\nwhile True: pass", timeout_s=1))
    assert result.timed_out and result.limit == "timeout" and result.exit_code is None
    assert 1 <= result.duration_s < 3 and time.monotonic() - started < 5
    assert result.to_text() == "started\n[killed: still running after 1 s]"


async def test_printing_1_gb_is_cut_off_with_bounded_memory(sandbox):
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    code = "import sys\nchunk = 'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.write(chunk)"
    result = await run(sandbox, code)
    peak_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert result.limit == "output" and result.exit_code is None
    assert FAST.output_kill_bytes <= result.dropped_bytes + FAST.output_bytes < 2**30
    assert len(result.stdout) < FAST.output_bytes + 100 and "bytes dropped]" in result.stdout
    assert peak_growth_mib < 100, f"reading the output grew the parent by {peak_growth_mib:.0f} MiB"
    assert result.to_text().endswith("[killed: printed too much output]")


async def test_file_size_limit(sandbox):
    result = await run(sandbox, "open('big.bin', 'wb').write(b'x' * (20 << 20))")
    assert result.limit == "file_size" and "File too large" in result.stderr


async def test_writes_outside_the_working_directory(sandbox, tmp_path):
    """Documented: as its own uid the code cannot write the parent's directories nor
    enter private ones, but it can read world-readable files and write /tmp; with
    namespaces, /tmp is its own (the host's files there are not even visible)."""
    private = tmp_path / "private"  # under pytest's 0700 directories, owned by the parent
    private.mkdir()
    public = Path(tempfile.mkdtemp(prefix="lmgym-test-public-"))
    public.chmod(0o755)
    (public / "readme.txt").write_text("world-readable")
    (public / "readme.txt").chmod(0o644)
    in_tmp = Path(tempfile.gettempdir(), f"lmgym-sandbox-test-{os.getpid()}.txt")
    code = (
        "def attempt(what, action):\n"
        "    try:\n"
        "        action()\n"
        "        print(what, 'ok')\n"
        "    except OSError as exc:\n"
        "        print(what, type(exc).__name__)\n"
        f"attempt('write private', lambda: open({str(private / 'x')!r}, 'w').write('x'))\n"
        f"attempt('write public', lambda: open({str(public / 'x')!r}, 'w').write('x'))\n"
        f"attempt('read public', lambda: open({str(public / 'readme.txt')!r}).read())\n"
        f"attempt('write tmp', lambda: open({str(in_tmp)!r}, 'w').write('x'))\n"
    )
    try:
        result = await run(sandbox, code)
        lines = result.stdout.splitlines()
        if result.network == "namespace":  # all three directories are in the host's /tmp
            assert lines == ["write private FileNotFoundError", "write public FileNotFoundError", "read public FileNotFoundError", "write tmp ok"]
            assert not in_tmp.exists()  # written to its private /tmp, gone with the call
        elif isolated_user(result):
            assert lines == ["write private PermissionError", "write public PermissionError", "read public ok", "write tmp ok"]
            assert not (private / "x").exists() and not (public / "x").exists()
            assert in_tmp.exists()  # documented as not prevented without namespaces
        else:  # documented: not root, so the code runs as your own user
            assert lines == ["write private ok", "write public ok", "read public ok", "write tmp ok"]
            assert in_tmp.exists()
    finally:
        in_tmp.unlink(missing_ok=True)
        shutil.rmtree(public)


async def test_no_process_outlives_its_call(sandbox):
    marker = Path(sandbox.workdir, "alive")
    code = "import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 0.6; echo > alive'], start_new_session=True)\nprint('spawned')"
    result = await run(sandbox, code)
    assert result.stdout == "spawned\n"
    await asyncio.sleep(1.0)  # a survivor would have written by now
    if result.network == "namespace" or isolated_user(result):
        assert not marker.exists()  # its PID namespace died with it, or its uid was swept
    else:  # documented: a process that leaves the group survives (not root, no namespaces)
        assert marker.exists()


async def test_cancelled_run_leaves_nothing_behind():
    async with await open_sandbox("default") as box:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(box.run("import time; time.sleep(30)"), 0.5)
        if box.uid is not None:
            assert processes_of(box.uid) == []
        assert (await run(box, "print('next call works')")).stdout == "next call works\n"


async def test_closing_kills_a_running_call():
    box = await open_sandbox("default")
    task = asyncio.create_task(box.run("import time; time.sleep(30)"))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    await bounded(box.close())
    result = await bounded(task)
    assert time.monotonic() - started < 5 and result.exit_code != 0
    assert not Path(box.workdir).exists()


async def test_refuses_to_run_code_as_root():
    if os.geteuid() != 0:
        pytest.skip("not root")
    if detect_isolation(sys.executable, False).drop_privileges:
        pytest.skip("an unprivileged uid can run this interpreter here, so nothing runs as root")
    async with Sandbox(namespaces=False) as box:
        with pytest.raises(SandboxError, match="refusing to run code as root"):
            await box.run("print('as root')")


def test_hidden_ancestors_finds_private_directories_on_the_way():
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        private = base / "home"
        (private / "me" / ".pyenv" / "lib").mkdir(parents=True)
        (private / "me" / "venv").mkdir()
        (base / "open" / "lib").mkdir(parents=True)
        private.chmod(0o700)
        paths = [str(private / "me" / ".pyenv" / "lib"), str(private / "me" / "venv"), str(base / "open" / "lib")]
        assert hidden_ancestors(paths) == ((str(private), ("me",)),)
    finally:
        shutil.rmtree(base)
