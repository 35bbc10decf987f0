"""`VLLMClient`: a `ModelClient` over vLLM's `/v1/completions`, token in and token out.

Like `LocalClient` it renders the chat template itself and keeps each conversation's
exact ids (`lmgym.train.render`), and sends the ids to `/v1/completions` with
`logprobs: 0` and `return_token_ids: true`, so the reply carries the sampled ids and each
one's logprob. The chat endpoint would re-tokenise earlier turns from text, which is not
token-exact. Like `LocalClient` it reads tool calls itself, from the sampled ids, with
the model's tool format: what the environment sees is parsed from exactly what trains.

The logprobs are those of the distribution the sampler drew from because the server runs
with `--logprobs-mode processed_logprobs`: log-softmax of logits / temperature, which is
what the trainer computes (vLLM's default, `raw_logprobs`, ignores the temperature). With
`top_p < 1` or `top_k`, vLLM renormalises over the kept tokens, unlike the in-process
engine, so the trainer then sees a small sampler mismatch. Temperature 0 is greedy, with
the untempered logprobs, as in the in-process engine.

Failed requests are retried as `OpenAIClient`'s are (`lmgym.clients.retry`), and at once
when the adapter a request named was replaced by a publish while it was on its way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from lmgym import errors
from lmgym.clients.http import http as _http
from lmgym.clients.retry import RetryPolicy, status_error
from lmgym.parsers.tool_calls import ToolFormat
from lmgym.train.engines.vllm.server import BASE_NAME
from lmgym.train.render import Renderer, stop_strings
from lmgym.types import Messages, ModelResponse, Usage

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


class Rejected(Exception):
    """vLLM answered with a status other than 200 to a request naming `name`."""

    def __init__(self, response: Any, name: str):
        super().__init__(f"HTTP {response.status_code}")
        self.response, self.name = response, name


def translate(exc: Exception) -> errors.ModelError:
    """What an attempt raised, on lmgym's error tree."""
    if isinstance(exc, errors.ModelError):
        return exc
    if isinstance(exc, Rejected):
        return status_error(exc.response.status_code, exc.response.text[:500])
    if isinstance(exc, _http.TimeoutException):
        return errors.ModelTimeoutError("the vLLM server did not answer within the timeout")
    if isinstance(exc, _http.TransportError):
        return errors.ModelConnectionError(f"cannot reach the vLLM server: {exc}")
    if isinstance(exc, (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError)):
        return errors.ModelResponseError(f"malformed response from the server: {exc!r}")
    return errors.ModelError(f"{type(exc).__name__}: {exc}")


class VLLMClient:
    """Requests go to the served name in `self.model` ("base", or the adapter of the latest
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
        tool_format: ToolFormat | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.tokenizer = tokenizer
        self.model = model
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max)
        self.timeout, self.transport = timeout, transport
        self.renderer = Renderer(tokenizer, tool_format)
        self.usage = Usage()
        self._http: Any = None  # one connection pool per event loop (the orchestrator may run one per step)
        self._loop: Any = None

    @property
    def template_mismatches(self) -> int:
        return self.renderer.template_mismatches

    def reset(self) -> None:
        """Forget conversation prefixes (between batches)."""
        self.renderer.clear()

    def _connection(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            self._http = _http.AsyncClient(
                timeout=self.timeout, transport=self.transport,
                limits=_http.Limits(max_connections=1000, max_keepalive_connections=1000),
            )
            self._loop = loop
        return self._http

    async def chat(
        self,
        messages: Messages,
        *,
        model: str = "",
        sampling: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ModelResponse:
        prompt = self.renderer.prompt(messages, tools)

        async def attempt() -> tuple[str, list[int], list[float], str | None, float]:
            name = self.model  # read per attempt: a publish may have switched it
            started = time.perf_counter()
            response = await self._connection().post(
                f"{self.base_url}/v1/completions", content=orjson.dumps(completion_body(name, prompt, sampling)),
                headers={"content-type": "application/json"},
            )
            if response.status_code != 200:
                raise Rejected(response, name)
            text, ids, logprobs, finish, prompt_length = parse_completion(orjson.loads(response.content))
            if prompt_length and prompt_length != len(prompt):
                raise errors.ModelResponseError(f"sent {len(prompt)} prompt ids, the server used {prompt_length}")
            return text, ids, logprobs, finish, time.perf_counter() - started

        text, ids, logprobs, finish, latency = await self.retry.run(attempt, translate, retry_now=self._adapter_replaced)
        message = self.renderer.reply(prompt, ids, text, tools=tools, stop=stop_strings(sampling))
        usage = Usage(len(prompt), len(ids), 1)
        self.usage.add(usage)
        return ModelResponse(
            message, finish, usage, latency, token_ids=ids, logprobs=logprobs, prompt_token_ids=list(prompt),
        )

    def _adapter_replaced(self, exc: Exception) -> bool:
        """The adapter was unloaded while the request was on its way: retry on the new one."""
        return isinstance(exc, Rejected) and exc.response.status_code == 404 and exc.name != self.model

    async def aclose(self) -> None:
        self.reset()
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http = self._loop = None
