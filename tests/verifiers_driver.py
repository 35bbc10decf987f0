"""`lmgym` commands run one after another in one process of the verifiers venv, for
tests/e2e/test_verifiers.py: a process of that venv pays seconds of imports (verifiers,
openai, anthropic; torch for `lmgym train`) before it runs anything, this one pays them once.

Started as `VENV_PYTHON tests/verifiers_driver.py`, in the folder and environment a
`VENV_PYTHON -m lmgym` process would get. It reads one JSON line per request on its stdin,
`{"args": [...], "cwd": "..."}`, runs `lmgym ARGS` in this process (cli_runner.invoke:
typer's CliRunner, log records on stderr as `lmgym.cli.main` sets them up), and writes one
JSON line per answer, `{"returncode": N, "stdout": "...", "stderr": "..."}` (or
`{"error": "..."}` when the driver itself failed), until its stdin ends.

The protocol has file descriptors of its own (copies of the stdin and stdout the driver
started with): fds 0 and 1 become /dev/null, and while a command runs fds 1 and 2 are files
whose text joins the answer, so nothing a command (or a process it starts) prints reaches
the channel. Between commands fd 2 is the driver's own stderr, which the tests show when it dies.

Each command starts from what a fresh process would see, as far as this process can give it:
context variables as they were when the driver started (verifiers keeps some), the
warnings filters and their "shown once" memory, os.environ, the working folder, the signal
handlers and the root logger's handlers.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import logging
import os
import signal
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

# As `python -m lmgym` run from this folder: the folder first (a script's own folder would
# be), the PYTHONPATH entries next; tests/ (cli_runner, paths) last, shadowing nothing.
TESTS = str(Path(__file__).resolve().parent)
sys.path[0] = os.getcwd()
sys.path.append(TESTS)

from cli_runner import invoke  # noqa: E402  (imports lmgym.cli)

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
# Each command runs in a copy of the context variables as they were before any command ran.
FRESH_CONTEXT = contextvars.copy_context()


def _channel() -> tuple:
    """The protocol's streams, on copies of fds 0 and 1, which then point at /dev/null."""
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    return requests, answers


def _run(args: list[str], cwd: str) -> dict:
    """`lmgym ARGS` in `cwd`: its exit code, and what it wrote to stdout and stderr, in Python
    (CliRunner's streams) or below (fds 1 and 2, for C code and the processes it starts)."""
    saved_fds = os.dup(1), os.dup(2)
    environ = dict(os.environ)
    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            with warnings.catch_warnings():  # the filters come back, and each warning shows once per command again
                result = FRESH_CONTEXT.copy().run(invoke, *args, cwd=cwd)
        finally:
            for fd, saved in zip((1, 2), saved_fds):
                os.dup2(saved, fd)
                os.close(saved)
            os.environ.clear()
            os.environ.update(environ)
            for s, handler in handlers.items():
                if handler is not None:
                    signal.signal(s, handler)
            root.handlers[:] = root_handlers
            root.setLevel(root_level)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            # What a process's Python would have printed on its way out (CliRunner keeps it).
            stderr += "".join(traceback.format_exception(*result.exc_info))
        out.seek(0)
        err.seek(0)
        return {"returncode": result.exit_code,
                "stdout": result.stdout + out.read().decode(errors="replace"),
                "stderr": stderr + err.read().decode(errors="replace")}


def main() -> None:
    # As lmgym.cli.main's logging.basicConfig: the root logger's level (invoke adds the handler).
    logging.getLogger().setLevel(os.environ.get("LMGYM_LOG_LEVEL", "WARNING").upper())
    requests, answers = _channel()
    for line in requests:
        try:
            request = json.loads(line)
            answer = _run(request["args"], request["cwd"])
        except Exception:  # the driver's own failure, not the command's: said in the answer
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer).encode() + b"\n")
        answers.flush()
    # The end of the requests: what the commands left for exit runs, then the process ends
    # without tearing its modules down one by one (most of a second of CPU).
    atexit._run_exitfuncs()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
