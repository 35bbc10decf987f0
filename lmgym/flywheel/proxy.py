"""An OpenAI-compatible recording proxy: agents point their `base_url` here (`lmgym proxy`).

`ProxyApp` is a bare ASGI app (served by uvicorn) that forwards `/v1/chat/completions`
(streaming and not), `/v1/completions` and `/v1/models` to an upstream OpenAI-compatible
API with httpx, and hands each chat/completions exchange to a `TraceWriter`, which
appends it as one JSON line to `traces-00001.jsonl`, `traces-00002.jsonl`, ...

What it guarantees:

* Clients authenticate with `Authorization: Bearer TOKEN`; a missing or wrong token gets
  401 and nothing is forwarded or recorded (unless the proxy runs with `token=None`).
* The request body goes upstream byte for byte; only the headers change: the client's
  `Authorization` is replaced by the upstream key, hop-by-hop headers are dropped, and
  `Accept-Encoding` is left to httpx, which decodes what comes back. In particular
  `stream_options.include_usage` is sent only when the client asked for it.
* Streams are passed through chunk by chunk as they arrive (with the client's
  backpressure), while the content, tool calls, finish reason and usage are assembled
  from the SSE events for the trace. A client that hangs up mid-stream ends the upstream
  request; the partial exchange is recorded with an error.
* Upstream errors reach the client as they came (status, body, `Retry-After` and the
  other headers) and are recorded. When the upstream cannot be reached the client gets
  502 (504 on a timeout), and so does the trace. A connection that fails before any
  response (a keep-alive connection the upstream closed as it was reused) is retried once.
* The upstream key is never logged, never written to a trace (every line is scrubbed of
  it as a last guard), and scrubbed from every non-streamed body sent back to clients
  (an upstream that quotes the key in an error message).
* Each trace line is written with one unbuffered `write(2)` on the event-loop thread, so
  concurrent exchanges never interleave and a crash of the proxy loses at most the
  exchanges in flight (an OS crash may also lose what the page cache held: no fsync).

Trace format (the contract with `lmgym traces`): one JSON object per line,

    {"id": "<uuid4 hex>",
     "session_id": str | null,          # the X-Session-Id header (configurable), if sent
     "endpoint": "/v1/chat/completions" | "/v1/completions",
     "started_at": float,               # unix time the request (all its body) had arrived
     "finished_at": float,              # unix time the response was complete (recorded
                                        # just before its last bytes go back to the client)
     "latency_s": float,                # finished - started, from a monotonic clock
     "stream": bool,                    # the request's "stream" field
     "request": {"model": str,
                 "messages": [...],     # chat; "prompt": ... instead for completions
                 "tools": [...] | null,
                 "sampling": {...}},    # every other request field except
                                        # messages/prompt/tools/model/stream/stream_options
     "status": int,                     # HTTP status the client got: the upstream's, or
                                        # 502/504 when the upstream was unreachable/too slow
     "response": {"model": str | null, "content": str | null,
                  "tool_calls": [...] | null,   # wire format: id, type, function{name, arguments}
                  "finish_reason": str | null} | null,    # null on an HTTP error
     "usage": {"prompt_tokens": int, "completion_tokens": int, "total_tokens": int} | null,
     "error": {"status": int, "body": <upstream error body, JSON or text>} | null}

`response` describes the first choice (index 0): with `n > 1` the other choices reach the
client but are not recorded. A request body that is not a JSON object is still forwarded;
its trace has `"model": null` and empty fields. A stream that breaks or is abandoned has
both a partial `response` and an `error`. `/v1/models` is forwarded but not recorded. A
torn last line (a crash mid-write) is closed with a newline before appending, so readers
should skip lines that do not parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

try:  # openai>=3 depends on httpx2 (the same API); older releases on httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as _http  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

TRACED_ROUTES = {"/chat/completions": "/v1/chat/completions", "/completions": "/v1/completions"}
NOT_SAMPLING = {"model", "messages", "prompt", "tools", "stream", "stream_options"}
HOP_BY_HOP = {
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"transfer-encoding", b"upgrade",
}
# Request headers not forwarded: the client's token, what httpx sets itself, and hop-by-hop.
DROP_REQUEST = HOP_BY_HOP | {b"authorization", b"host", b"content-length", b"accept-encoding", b"expect"}
# Response headers not forwarded: httpx has decoded the body, and we frame it ourselves.
DROP_RESPONSE = HOP_BY_HOP | {b"content-length", b"content-encoding"}
TRACE_FILE = re.compile(r"traces-(\d{5,})\.jsonl")


def trace_path(directory: Path, index: int) -> Path:
    return directory / f"traces-{index:05d}.jsonl"


class TraceWriter:
    """Appends records as JSON lines to DIR/traces-NNNNN.jsonl, a new file every `rotate_bytes`.

    Each line is written whole with one unbuffered write (no Python buffer to flush), under
    a lock. An existing folder is continued: the highest-numbered file is appended to.
    Every occurrence of a `secrets` string (8 characters or more) is replaced by `***`.
    """

    def __init__(self, directory: Path | str, rotate_bytes: int = 100 * 2**20, secrets: Iterable[str | None] = ()):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes = rotate_bytes
        self._secrets = [s.encode() for s in secrets if s and len(s) >= 8]
        self._lock = threading.Lock()
        self._file = None
        self._size = 0
        existing = [int(m.group(1)) for p in self.directory.iterdir() if (m := TRACE_FILE.fullmatch(p.name))]
        self._index = max(existing, default=1)
        self.written = 0  # records written by this writer

    @property
    def path(self) -> Path:
        """The file the next record goes to (unless it is full)."""
        return trace_path(self.directory, self._index)

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        for secret in self._secrets:
            line = line.replace(secret, b"***")
        with self._lock:
            if self._file is None:
                self._open()
            if self._size and self._size + len(line) > self.rotate_bytes:
                self._file.close()
                self._index += 1
                self._open()
            self._write_all(line)
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open(self) -> None:
        self._file = open(self.path, "a+b", buffering=0)  # noqa: SIM115 - kept open; readable for the torn-line check
        self._size = os.fstat(self._file.fileno()).st_size
        if self._size and os.pread(self._file.fileno(), 1, self._size - 1) != b"\n":
            self._write_all(b"\n")  # close a line torn by a crash; never glue a record onto it

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._file.write(view)
            view = view[written:]
        self._size += len(data)


def summarise_request(route: str, body: Any) -> dict[str, Any]:
    """The trace's `request`: model, messages or prompt, tools, and the sampling fields."""
    text_key = "messages" if route == "/chat/completions" else "prompt"
    if not isinstance(body, dict):
        return {"model": None, text_key: None, "tools": None, "sampling": {}}
    return {
        "model": body.get("model"),
        text_key: body.get(text_key),
        "tools": body.get("tools"),
        "sampling": {k: v for k, v in body.items() if k not in NOT_SAMPLING},
    }


def summarise_usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": _count(usage.get("total_tokens")) or prompt + completion}


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


def summarise_response(route: str, data: Any) -> tuple[dict[str, Any] | None, dict[str, int] | None]:
    """The trace's `response` and `usage` from a non-streamed JSON body."""
    if not isinstance(data, dict):
        return None, None
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    if route == "/chat/completions":
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content, tool_calls = message.get("content"), message.get("tool_calls") or None
    else:
        content, tool_calls = choice.get("text"), None
    response = {"model": data.get("model"), "content": content, "tool_calls": tool_calls,
                "finish_reason": choice.get("finish_reason")}
    return response, summarise_usage(data.get("usage"))


class StreamAssembler:
    """Rebuilds a streamed (SSE) completion from the bytes as they pass: feed, then result."""

    def __init__(self, route: str):
        self.chat = route == "/chat/completions"
        self._buffer = b""
        self._data: list[bytes] = []  # the data lines of the event being read
        self.model: str | None = None
        self.parts: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.error: Any = None
        self.done = False  # [DONE] seen

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                self._dispatch()
            elif line.startswith(b"data:"):
                self._data.append(line[5:].strip())

    def result(self) -> tuple[dict[str, Any], dict[str, int] | None]:
        self.feed(b"\n\n")  # a last event without its blank line
        calls = [self.tool_calls[i] for i in sorted(self.tool_calls)] or None
        content = "".join(self.parts) if self.parts or not calls else None
        response = {"model": self.model, "content": content, "tool_calls": calls, "finish_reason": self.finish_reason}
        return response, self.usage

    def _dispatch(self) -> None:
        data, self._data = b"\n".join(self._data), []
        if data == b"[DONE]":
            self.done = True
        if not data or self.done:
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        if event.get("error"):
            self.error = event
        self.model = event.get("model") or self.model
        if event.get("usage"):
            self.usage = summarise_usage(event["usage"])
        try:
            for choice in event.get("choices") or ():
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._add_choice(choice)
        except (AttributeError, TypeError) as exc:  # an odd event must never break the stream itself
            logger.debug("unexpected stream event shape, not recorded: %s", exc)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if not self.chat:
            if isinstance(choice.get("text"), str):
                self.parts.append(choice["text"])
            return
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            self.parts.append(delta["content"])
        for fragment in delta.get("tool_calls") or ():  # merged by index, strings concatenated
            call = self.tool_calls.setdefault(
                fragment.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = call["id"] or fragment.get("id")
            call["type"] = fragment.get("type") or call["type"]
            function = fragment.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""


def _decode_body(data: bytes) -> Any:
    """An error body as recorded: its JSON when it parses, else its text."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")


def _error_payload(message: str, kind: str = "proxy_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        event = await receive()
        chunks.append(event.get("body", b""))
        if not event.get("more_body"):
            return b"".join(chunks)


async def _send_whole(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, payload: Any) -> None:
    await _send_whole(send, status, orjson.dumps(payload), [(b"content-type", b"application/json")])


class UpstreamPool:
    """Several httpx clients used as one pool of upstream connections.

    httpx walks its whole connection pool on every request, probing each idle socket, so
    one client holding hundreds of keep-alive connections spends milliseconds of CPU per
    request: most of the proxy's CPU at 200 concurrent clients. Spread over `shards`
    clients, each walk is short. A request goes to the client with the fewest requests in
    flight (the first on ties), so light traffic keeps reusing the same warm connections.
    """

    def __init__(self, *, timeout: float, max_connections: int, shards: int = 16):
        self._timeout = _http.Timeout(timeout, connect=min(timeout, 30.0))
        per_shard = max(1, -(-max_connections // shards))
        self._limits = _http.Limits(max_connections=per_shard, max_keepalive_connections=per_shard)
        self._clients: list[Any] = [None] * shards
        self._busy = [0] * shards
        self._ssl = None  # one TLS context for all shards: building one costs ~50 ms

    @contextlib.asynccontextmanager
    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes | None, *, stream: bool):
        """The upstream's response, closed on exit. A connection that fails before any
        response came back is retried once: nearly always a keep-alive connection the
        upstream closed just as it was reused, a race every HTTP client has. Should the
        upstream instead have received the request and then died, it runs twice (the
        client still gets one answer and the trace one record). Timeouts are not retried."""
        shard = min(range(len(self._busy)), key=self._busy.__getitem__)
        if self._clients[shard] is None:  # created on first use, inside the serving event loop
            self._ssl = self._ssl or _http.create_ssl_context()
            self._clients[shard] = _http.AsyncClient(timeout=self._timeout, limits=self._limits, verify=self._ssl)
        client = self._clients[shard]
        self._busy[shard] += 1
        try:
            try:
                response = await client.send(client.build_request(method, url, headers=headers, content=body), stream=stream)
            except (_http.NetworkError, _http.RemoteProtocolError) as exc:
                logger.debug("upstream connection failed before a response (%s); retrying once", type(exc).__name__)
                response = await client.send(client.build_request(method, url, headers=headers, content=body), stream=stream)
            try:
                yield response
            finally:
                await response.aclose()
        finally:
            self._busy[shard] -= 1

    async def aclose(self) -> None:
        for client in self._clients:
            if client is not None:
                await client.aclose()
        self._clients = [None] * len(self._clients)


class ProxyApp:
    """The ASGI app. `token=None` accepts every client; `upstream_key=None` sends no key upstream."""

    def __init__(
        self,
        upstream: str,
        writer: TraceWriter,
        *,
        token: str | None,
        upstream_key: str | None = None,
        session_header: str = "X-Session-Id",
        timeout: float = 600.0,
        max_connections: int = 1000,
    ):
        if token is not None and not token:
            raise ValueError("the client token must not be empty (use token=None for no authentication)")
        self.upstream = upstream.rstrip("/")
        self.writer = writer
        self._token = token.encode() if token is not None else None
        self._upstream_auth = f"Bearer {upstream_key}".encode() if upstream_key else None
        self._secret = upstream_key.encode() if upstream_key and len(upstream_key) >= 8 else None
        self._session_header = session_header.lower().encode()
        self._timeout = timeout
        self._pool = UpstreamPool(timeout=timeout, max_connections=max_connections)

    def __repr__(self) -> str:  # never shows a key
        return f"ProxyApp(upstream={self.upstream!r}, traces={str(self.writer.directory)!r})"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route, method = scope["path"].removeprefix("/v1"), scope["method"]
        if not self._authorised(scope["headers"]):
            await _send_json(send, 401, _error_payload(
                "missing or wrong proxy token: send it as the API key (Authorization: Bearer TOKEN)",
                "invalid_request_error", "invalid_api_key",
            ))
        elif route in TRACED_ROUTES and method == "POST":
            await self._exchange(route, scope, receive, send)
        elif (route == "/models" or route.startswith("/models/")) and method == "GET":
            await self._forward_untraced(scope, send)
        else:
            await _send_json(send, 404, _error_payload(f"the proxy does not serve {method} {scope['path']}", code="not_found"))

    async def aclose(self) -> None:
        await self._pool.aclose()
        self.writer.close()

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _authorised(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self._token is None:
            return True
        for name, value in headers:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)
        return False

    def _upstream_request(self, scope) -> tuple[str, str, list[tuple[bytes, bytes]]]:
        """Method, URL and headers of the upstream request: the client's, with our key."""
        headers = [(k, v) for k, v in scope["headers"] if k not in DROP_REQUEST]
        if self._upstream_auth is not None:
            headers.append((b"authorization", self._upstream_auth))
        url = self.upstream + scope["path"].removeprefix("/v1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        return scope["method"], url, headers

    def _scrub(self, data: bytes) -> bytes:
        return data.replace(self._secret, b"***") if self._secret and self._secret in data else data

    async def _exchange(self, route: str, scope, receive, send) -> None:
        exchange = _Exchange(self, route, scope, send, await _read_body(receive))
        try:
            try:
                async with self._pool.send(*self._upstream_request(scope), exchange.body, stream=True) as response:
                    await self._relay(exchange, response, receive)
            except _http.TransportError as exc:
                if exchange.record["status"] is not None:  # the response had begun; handled where it could be
                    raise
                await exchange.fail(exc)
        except asyncio.CancelledError:  # shutdown timed out, or the server cancelled us
            exchange.record["error"] = exchange.record["error"] or {
                "status": 499, "body": "the proxy stopped before the exchange finished"}
            raise
        finally:
            exchange.finish()

    async def _relay(self, exchange: _Exchange, response, receive) -> None:
        record = exchange.record
        record["status"] = response.status_code
        headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROP_RESPONSE]
        if response.status_code < 400 and response.headers.get("content-type", "").startswith("text/event-stream"):
            await self._stream(exchange, response, headers, receive)
            return
        try:
            data = self._scrub(await response.aread())
        except _http.TransportError as exc:  # the body broke off or stalled: nothing was sent yet
            await exchange.fail(exc)
            return
        if response.status_code >= 400:
            record["error"] = {"status": response.status_code, "body": _decode_body(data)}
        else:
            try:
                record["response"], record["usage"] = summarise_response(exchange.route, _decode_body(data))
            except (AttributeError, TypeError) as exc:  # an odd body still goes back to the client
                logger.warning("unexpected response shape from the upstream, not recorded: %s", exc)
        exchange.finish()
        await _send_whole(exchange.send, response.status_code, data, headers)

    async def _stream(self, exchange: _Exchange, response, headers, receive) -> None:
        record, send = exchange.record, exchange.send
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        assembler = StreamAssembler(exchange.route)

        def collect() -> None:
            record["response"], record["usage"] = assembler.result()
            if assembler.error is not None and record["error"] is None:
                record["error"] = {"status": response.status_code, "body": assembler.error}

        hung_up = asyncio.ensure_future(receive())  # completes when the client disconnects
        try:
            async for chunk in response.aiter_bytes():
                if hung_up.done():
                    record["error"] = {"status": 499, "body": "the client disconnected before the stream ended"}
                    break
                assembler.feed(chunk)
                if assembler.done:  # clients stop reading at [DONE]: record the exchange before they can
                    collect()
                    exchange.finish()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except _http.TransportError as exc:
            record["error"] = {"status": 502, "body": f"the upstream stream broke: {type(exc).__name__}: {exc}"}
        finally:
            hung_up.cancel()
            collect()
        exchange.finish()
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _unreachable(self, exc: Exception) -> tuple[int, dict[str, Any]]:
        if isinstance(exc, _http.TimeoutException):
            return 504, _error_payload(f"the upstream did not answer within {self._timeout:g}s", code="upstream_timeout")
        detail = self._scrub(f"{type(exc).__name__}: {exc}".encode()).decode()
        return 502, _error_payload(f"cannot reach the upstream {self.upstream}: {detail}", code="upstream_unreachable")

    async def _forward_untraced(self, scope, send) -> None:
        try:
            async with self._pool.send(*self._upstream_request(scope), None, stream=False) as response:
                headers = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in DROP_RESPONSE]
                await _send_whole(send, response.status_code, self._scrub(response.content), headers)
        except _http.TransportError as exc:
            await _send_json(send, *self._unreachable(exc))


class _Exchange:
    """One traced request: its trace record, written once, just before the last bytes go
    back to the client (so a client that has its answer has its trace)."""

    def __init__(self, app: ProxyApp, route: str, scope, send, body: bytes):
        self.app, self.route, self.send, self.body = app, route, send, body
        self.started = time.perf_counter()
        self.written = False
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        session = next((v.decode("utf-8", "replace") for k, v in scope["headers"] if k == app._session_header), None)
        self.record: dict[str, Any] = {
            "id": uuid.uuid4().hex, "session_id": session, "endpoint": TRACED_ROUTES[route],
            "started_at": time.time(), "finished_at": None, "latency_s": None,
            "stream": isinstance(request, dict) and request.get("stream") is True,
            "request": summarise_request(route, request),
            "status": None, "response": None, "usage": None, "error": None,
        }

    def finish(self) -> None:
        if self.written:
            return
        self.written = True
        record = self.record
        record["finished_at"] = time.time()
        record["latency_s"] = time.perf_counter() - self.started
        try:
            self.app.writer.write(record)
        except OSError as exc:  # losing the trace must not take the client's answer with it
            logger.error("could not write the trace of %s: %s", record["id"], exc)
        logger.debug("%s -> %s in %.3fs (session %s)", record["endpoint"], record["status"], record["latency_s"], record["session_id"])

    async def fail(self, exc: Exception) -> None:
        """No (complete) response from the upstream: the client gets 502/504, and so does the trace."""
        status, payload = self.app._unreachable(exc)
        self.record["status"], self.record["error"] = status, {"status": status, "body": payload}
        self.finish()
        await _send_json(self.send, status, payload)
