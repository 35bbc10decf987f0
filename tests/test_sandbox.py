"""Sandbox: what model-written code can and cannot do, each case bounded in time.

The security tests run in every isolation mode this machine offers (namespaces, and
blocked sockets without namespaces) and assert what `lmgym/envs/sandbox.py` documents for
the mode it reports, so a test fails if a protection silently stops applying.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lmgym.envs.sandbox import (
    ExecutionResult,
    Sandbox,
    SandboxError,
    SandboxLimits,
    detect_isolation,
    hidden_ancestors,
    processes_of,
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
    result = await bounded(sandbox.run(code, timeout_s=2))
    assert result.limit == "timeout" and result.exit_code is None
    assert time.monotonic() - started < 2 + 5
    assert "fork failed: [Errno 11] Resource temporarily unavailable" in result.stdout  # RLIMIT_NPROC
    if sandbox.uid is not None:
        assert processes_of(sandbox.uid) == []
    assert (await run(sandbox, "print('still fine')")).stdout == "still fine\n"


async def test_allocating_8_gb_fails_with_memory_error(sandbox):
    result = await run(sandbox, "block = bytearray(8 * 2**30)\nprint('allocated')")
    assert result.limit == "memory" and result.exit_code == 1
    assert "allocated" not in result.stdout and result.stderr.rstrip().endswith("MemoryError")


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
    enter private ones, but it can read world-readable files and write /tmp."""
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
        if isolated_user(result):
            assert lines == ["write private PermissionError", "write public PermissionError", "read public ok", "write tmp ok"]
            assert not (private / "x").exists() and not (public / "x").exists()
        else:  # documented: not root, so the code runs as your own user
            assert lines == ["write private ok", "write public ok", "read public ok", "write tmp ok"]
        assert in_tmp.exists()  # documented as not prevented
    finally:
        in_tmp.unlink(missing_ok=True)
        shutil.rmtree(public)


async def test_no_process_outlives_its_call(sandbox):
    marker = Path(sandbox.workdir, "alive")
    code = "import subprocess\nsubprocess.Popen(['sh', '-c', 'sleep 1; echo > alive'], start_new_session=True)\nprint('spawned')"
    result = await run(sandbox, code)
    assert result.stdout == "spawned\n"
    await asyncio.sleep(1.5)
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
