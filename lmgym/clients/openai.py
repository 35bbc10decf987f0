"""`OpenAIClient`: any OpenAI-compatible chat server (OpenAI, vLLM, llama.cpp, SGLang).

Each request is one POST of orjson-encoded bytes to `BASE_URL/chat/completions` over a
pool of keep-alive connections (`lmgym.clients.connections`, on asyncio's protocols), and
the reply is decoded with orjson into a `ModelResponse`: no SDK models are built, and at
RL scale the orchestrator's CPU is the limit. What the OpenAI SDK would read from the environment is
read the same way: the base URL defaults to `OPENAI_BASE_URL`, else
https://api.openai.com/v1, and `OPENAI_ORG_ID` and `OPENAI_PROJECT_ID` are sent as the
`OpenAI-Organization` and `OpenAI-Project` headers; the key goes as `Authorization:
Bearer KEY` ("EMPTY" when there is none, as local servers expect). A redirect is an
error that says where it points (an API endpoint that redirects is misconfigured).

Retries are explicit and tested, and the same as the vLLM rollout client's
(`lmgym.clients.retry`): 429, 5xx, timeouts, dropped connections and malformed bodies
are retried with exponential backoff and jitter, honouring `Retry-After`; after
`max_retries` the error is raised and the rollout records it. Other 4xx are not retried.
The API key is never logged or written anywhere, and it is scrubbed from error messages.

`timeout` bounds each try as a whole, from connecting to the last byte of the body: a
server that sends a byte now and then would otherwise hold a rollout for as long as it
likes. A 200 body of the wrong shape (no `choices` list, a message that is not an
object, ...) is malformed like a torn one: a proxy or an overloaded server in front of
the model, not the model, wrote it.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import Any, Mapping

import orjson

from lmgym import errors
from lmgym.clients.connections import Connections
from lmgym.clients.retry import RetryPolicy, status_error
from lmgym.types import Message, ModelResponse, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class HTTPStatusError(Exception):
    """A reply whose status is not 2xx; `response.headers` (lower-case names) carries any Retry-After."""

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes):
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code
        self.response = self  # where `lmgym.clients.retry.response_headers` looks
        self.headers = headers
        self.content = content


def status_detail(status: int, content: bytes, headers: Mapping[str, str] | None = None) -> str:
    """What the server said about a failed request: the `message` of an OpenAI-style
    `{"error": {"message": ...}}` body (or its `error`), else the body's text; for a
    redirect, where it points."""
    if 300 <= status < 400:
        location = (headers or {}).get("location", "nowhere")
        return f"the endpoint redirects to {location}: give the URL it redirects to as the base URL"
    text = content.decode("utf-8", "replace").strip()
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        return (text or f"Error code: {status}")[:500]
    data = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or data)[:500]
    return f"Error code: {status} - {body}"[:500]


def translate_error(exc: BaseException, secret: str | None = None) -> errors.ModelError:
    """Map a transport or decoding exception onto lmgym's error tree, scrubbing the key."""

    def scrub(text: str) -> str:  # placeholder keys like "x" or "EMPTY" are not secrets
        return text.replace(secret, "***") if secret and len(secret) >= 8 else text

    if isinstance(exc, errors.ModelError):
        return exc
    if isinstance(exc, TimeoutError):  # asyncio.timeout's (before OSError: TimeoutError is one)
        return errors.ModelTimeoutError("the model server did not send its whole answer within the timeout")
    if isinstance(exc, OSError):  # refused, reset, unresolvable, TLS, or the reply broke off
        return errors.ModelConnectionError(scrub(f"cannot reach the model server: {exc}"))
    if isinstance(exc, HTTPStatusError):
        return status_error(exc.status_code, scrub(status_detail(exc.status_code, exc.content, exc.headers)))
    if isinstance(exc, (orjson.JSONDecodeError, MalformedResponse)):
        return errors.ModelResponseError(scrub(f"malformed response from the server: {exc}"))
    return errors.ModelError(scrub(f"{type(exc).__name__}: {exc}"))


class MalformedResponse(ValueError):
    """A 200 body that is valid JSON but not a chat completion; says which field is wrong."""


def _preview(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()[:200]


def _expect(value: Any, kinds: type | tuple[type, ...], where: str, *, optional: bool = True) -> Any:
    """`value` when it is of `kinds` (or None, when optional); else MalformedResponse naming `where`."""
    if (value is None and optional) or (isinstance(value, kinds) and not isinstance(value, bool)):
        return value
    raise MalformedResponse(f"{where} is {_preview(value)}")


def _count(value: Any, where: str) -> int:
    """A token count: a whole number (some servers send 12.0), 0 when absent."""
    number = _expect(value, (int, float), where) or 0
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise MalformedResponse(f"{where} is {_preview(value)}")
    return int(number)


def _logprobs(choice: dict[str, Any]) -> list[float] | None:
    """The sampled tokens' logprobs of a choice, when the server sent them."""
    logprobs = _expect(choice.get("logprobs"), dict, "choices[0].logprobs") or {}
    content = _expect(logprobs.get("content"), list, "choices[0].logprobs.content") or []
    items = [_expect(item, dict, "choices[0].logprobs.content[]", optional=False) for item in content]
    where = "choices[0].logprobs.content[].logprob"
    return [float(_expect(item.get("logprob"), (int, float), where, optional=False)) for item in items] or None


def parse_chat_response(data: Any, latency_s: float) -> ModelResponse:
    """Decode a chat.completion JSON body into a `ModelResponse`; MalformedResponse when
    the body is not shaped like one."""
    data = _expect(data, dict, "the body", optional=False)
    choices = _expect(data.get("choices"), list, "choices", optional=False)
    if not choices:
        raise MalformedResponse("choices is empty")
    choice = _expect(choices[0], dict, "choices[0]", optional=False)
    raw = _expect(choice.get("message"), dict, "choices[0].message", optional=False)
    message: Message = {"role": "assistant", "content": _expect(raw.get("content"), str, "choices[0].message.content")}
    if tool_calls := _expect(raw.get("tool_calls"), list, "choices[0].message.tool_calls"):
        message["tool_calls"] = [_expect(call, dict, "choices[0].message.tool_calls[]", optional=False) for call in tool_calls]
    usage_data = _expect(data.get("usage"), dict, "usage") or {}
    usage = Usage(
        prompt_tokens=_count(usage_data.get("prompt_tokens"), "usage.prompt_tokens"),
        completion_tokens=_count(usage_data.get("completion_tokens"), "usage.completion_tokens"),
        requests=1,
    )
    finish_reason = _expect(choice.get("finish_reason"), str, "choices[0].finish_reason")
    return ModelResponse(message, finish_reason, usage, latency_s, logprobs=_logprobs(choice))


def wire_messages(messages: list[Message]) -> list[Message]:
    """Messages as sent: a null `content` (an assistant turn that only calls tools) becomes
    "", which every server reads the same way; llama.cpp's server rejects null there."""
    if all(m.get("content") is not None for m in messages):
        return messages
    return [{**m, "content": ""} if m.get("content") is None else m for m in messages]


def request_headers(api_key: str | None) -> dict[str, str]:
    """The headers of every request, as the OpenAI SDK would send them."""
    headers = {
        "Authorization": f"Bearer {api_key or 'EMPTY'}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Accept-Encoding": "gzip, deflate",
        "User-Agent": "lmgym",
    }
    for header, variable in (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID")):
        if value := os.environ.get(variable):
            headers[header] = value
    return headers


class OpenAIClient:
    """A `ModelClient` for any OpenAI-compatible `/chat/completions` endpoint.

    Its connection pool grows to the requests in flight, which the caller bounds (`lmgym
    eval -c`), so it is sized to the run's concurrency; `max_connections` caps it."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_connections: int | None = None,
    ):
        self.base_url = base_url
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries, backoff_base, backoff_max)
        self._secret = api_key
        root = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        try:
            self._connections = Connections(f"{root}/chat/completions", request_headers(api_key), max_connections)
        except ValueError as exc:
            raise errors.UsageError(f"the model server's base URL {root!r}: {exc}") from None
        self.usage = Usage()  # every request of this client, for the run's summary

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIClient(base_url={self.base_url!r})"

    async def chat(
        self,
        messages: list[Message],
        *,
        model: str,
        sampling: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> ModelResponse:
        body: dict[str, Any] = {"model": model, "messages": wire_messages(messages), **(sampling or {})}
        if tools:
            body["tools"] = tools
        try:
            payload = orjson.dumps(body)
        except TypeError as exc:  # a message or sampling value JSON cannot hold: the request is wrong
            raise errors.ModelRequestError(f"the request cannot be sent as JSON: {exc}") from None

        async def attempt() -> ModelResponse:
            started = time.perf_counter()
            async with asyncio.timeout(self.timeout):  # the whole try, not each read
                reply = await self._connections.post(payload)
            if not 200 <= reply.status < 300:
                raise HTTPStatusError(reply.status, reply.headers, reply.content)
            response = parse_chat_response(orjson.loads(reply.content), time.perf_counter() - started)
            self.usage.add(response.usage)
            if not response.message["content"] and not response.message.get("tool_calls"):
                raise errors.EmptyResponseError(
                    f"the model returned no content (finish_reason={response.finish_reason!r})"
                )
            return response

        return await self.retry.run(attempt, lambda exc: translate_error(exc, self._secret))

    async def aclose(self) -> None:
        await self._connections.aclose()
