"""The `lmgym` command for tests: in this process (`invoke`), or as its own process
(`run_process`) for the one smoke test per command and for what needs a real process
(signals, kills, a second process holding a lock, what a user's terminal shows).

A process costs seconds of start-up (imports; torch for the training commands); in this
process the command costs none. Both results answer `returncode`, `stdout` and `stderr`,
so a test reads the same either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from paths import ROOT
from typer.testing import CliRunner

from lmgym.cli import app

# A test run under torchrun must not hand its rank to the processes it starts.
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class _StderrLog(logging.StreamHandler):
    """Log records on the stderr of the moment, which CliRunner swaps for its own."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@contextlib.contextmanager
def _logging_as_main():
    """Log records on stderr as `lmgym.cli.main` sets them up (a process's `lmgym` prints its
    warnings there, and tests read them there)."""
    handler = _StderrLog()
    level = os.environ.get("LMGYM_LOG_LEVEL", "WARNING").upper()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))  # main()'s format
    root = logging.getLogger()
    root_level = root.level
    root.addHandler(handler)
    root.setLevel(min(root.level, handler.level))  # as main()'s basicConfig: LMGYM_LOG_LEVEL=INFO shows INFO
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(root_level)


def invoke(*args: str, env: dict[str, str] | None = None, cwd: str | Path | None = None):
    """Run `lmgym ARGS` in this process (in `cwd` when given); the result's `flat` is its
    output with rich's line wrapping undone, `returncode` its exit code as a process's."""
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext(), _logging_as_main():
        result = CliRunner().invoke(app, list(args), env=env)
    result.flat = " ".join(result.output.split())
    result.returncode = result.exit_code
    return result


def process_env(**extra: str) -> dict[str, str]:
    """This process's environment without torchrun's rank variables, wide enough that rich
    does not wrap messages, plus `extra`."""
    environ = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    return {**environ, "COLUMNS": "200", **extra}


def default_sigint() -> None:
    """`preexec_fn` for a child the test will stop with SIGINT: a shell runs background
    jobs (`make test &`) with SIGINT ignored, the child would inherit that, and Python then
    never raises KeyboardInterrupt; the child gets the default back, as from a terminal."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_process(*args: str, cwd: str | Path = ROOT, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m lmgym ARGS` as its own process, output captured as text."""
    return subprocess.run([sys.executable, "-m", "lmgym", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=process_env(**(env or {})), check=False)


def assert_one_error(result, *expected: str) -> None:
    """Exit 2, no exception escaped, and each expected text in the one message (rich may wrap it)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    flat = "".join(result.output.split())
    for text in expected:
        assert "".join(text.split()) in flat, (text, result.output)
