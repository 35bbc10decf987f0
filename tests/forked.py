"""`lmgym ARGS` in a child process forked from this test process, for the tests that kill
a training run for real (SIGKILL mid-save, or while it holds its run directory's lock).

A fork already holds torch, transformers and lmgym, which this pytest worker imported
while it collected the tests: a fresh interpreter would spend about 4.5 s of CPU importing
them again before the part that is killed. The child is a real process of its own (its own
pid, locks and files; killed, it dies as any process does); it writes its output to files,
never to the worker's streams, and leaves by `os._exit`, never back into pytest. Only the
forking thread lives on in a child, so it computes with one torch thread (the parent's
OpenMP pool would never answer). The smoke tests of each command still start a fresh
interpreter (`cli_runner.run_process`).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from cli_runner import process_env


class ForkedLmgym:
    """A running `lmgym ARGS` child: `pid`, `poll()`, `send_signal()`, `wait()`, and its
    output once it has ended (`stdout`, `stderr`)."""

    def __init__(self, args: tuple[str, ...], folder: Path, cwd: Path, before: Callable[[], None] | None):
        folder.mkdir(parents=True, exist_ok=True)
        self.args, self.returncode = args, None
        self._out, self._err = folder / "stdout.txt", folder / "stderr.txt"
        self.pid = os.fork()
        if self.pid == 0:
            self._child(cwd, before)

    def _child(self, cwd: Path, before: Callable[[], None] | None) -> None:
        code = 1
        try:
            for path, fd in ((self._out, 1), (self._err, 2)):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # noqa: SIM115
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if "torch" in sys.modules:  # the parent's OpenMP threads are not in the child: one thread, no pool
                sys.modules["torch"].set_num_threads(1)
            logging.root.handlers.clear()  # pytest's capture handlers: lmgym's own go to stderr
            os.chdir(cwd)
            environ = process_env()  # read before the clear
            os.environ.clear()
            os.environ.update(environ)
            if before is not None:
                before()
            from lmgym.cli import main

            sys.argv = ["lmgym", *self.args]
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except BaseException:  # noqa: BLE001 - reported on the child's stderr, as a process would
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float = 600.0) -> int:
        """Its exit code; a child still running after `timeout` seconds is killed and
        fails the test."""
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.send_signal(signal.SIGKILL)
                self.wait()
                raise TimeoutError(f"lmgym {' '.join(self.args)} ran past {timeout:.0f} s; its stderr:\n{self.stderr[-3000:]}")
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    @property
    def stdout(self) -> str:
        return self._out.read_text()

    @property
    def stderr(self) -> str:
        return self._err.read_text()


def start_lmgym(*args: str, folder: Path, cwd: Path, before: Callable[[], None] | None = None) -> ForkedLmgym:
    """`lmgym ARGS` forked, running in `cwd` with `process_env()`; `before` runs in the
    child first. Its output goes to files in `folder`."""
    return ForkedLmgym(args, folder, cwd, before)


def killed_around(target: str, moment: str, condition: Callable[[tuple], bool]) -> Callable[[], None]:
    """A `before` for `start_lmgym`: the child SIGKILLs itself just "before" or "after" a call
    of `target` ("module:attribute.path", where lmgym finds it: a name another module bound
    when it was imported must be patched there) whose positional arguments satisfy
    `condition`."""
    module_name, name = target.split(":")

    def install() -> None:
        owner = importlib.import_module(module_name)
        *path, last = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        real = getattr(owner, last)

        def killing(*args, **kwargs):
            kill = condition(args)
            if kill and moment == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            result = real(*args, **kwargs)
            if kill and moment == "after":
                os.kill(os.getpid(), signal.SIGKILL)
            return result

        setattr(owner, last, killing)

    return install


def run_lmgym(*args: str, folder: Path, cwd: Path, before: Callable[[], None] | None = None) -> CompletedProcess:
    """`start_lmgym`, waited for: its exit code (-N when signal N killed it) and output."""
    child = start_lmgym(*args, folder=folder, cwd=cwd, before=before)
    return CompletedProcess(["lmgym", *args], child.wait(), child.stdout, child.stderr)
