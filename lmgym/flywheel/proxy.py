"""An OpenAI-compatible recording proxy: agents point their `base_url` here (`lmgym proxy`).

`ProxyApp` is a bare ASGI app (served by uvicorn) that forwards `/v1/chat/completions`
(streaming and not), `/v1/completions`, `/v1/models` and `/v1/models/{id}` to an upstream
OpenAI-compatible API with httpx, and hands each chat/completions exchange to a
`TraceWriter`, which appends it as one JSON line to `traces-00001.jsonl`, ...

What it guarantees:

* Clients authenticate with `Authorization: Bearer TOKEN`; a missing or wrong token gets
  401 and nothing is forwarded or recorded (unless the proxy runs with `token=None`).
* Only those routes go upstream, matched exactly on the decoded path (a model id is one
  path segment of safe characters), and the upstream URL is built from the route, never
  from the client's text: dot-segments, encoded `/`, `?`, `#` or CR/LF get 404, a query
  string 400, and nothing of them is forwarded or recorded.
* The request body goes upstream byte for byte; only the headers change: the client's
  `Authorization` is replaced by the upstream key; hop-by-hop headers (and those its
  `Connection` header names) are dropped, and so are its credential headers (`Cookie`,
  `OpenAI-Organization`, `OpenAI-Project`, `*api-key*`, `*auth*`, `*token*`, ...) unless
  named in `forward_headers`; `Accept-Encoding` is left to httpx, which decodes what
  comes back. In particular `stream_options.include_usage` is sent only when the client
  asked for it.
* What a client may send is bounded: a body over `max_body_bytes` (32 MB) gets 413 before
  more of it is read; a body not all arrived within `client_timeout` gets 408; headers
  not complete within `client_timeout` close the connection (`http_protocol`, which the
  CLI serves with); a client that hangs up mid-upload is not forwarded or recorded.
* Each upstream request is bounded as a whole: `timeout` runs from connecting to the last
  byte of the answer, a stream included, not from one read to the next (httpx's own
  timeouts), so an upstream that trickles a byte every half second cannot hold a client
  for longer. The choice: a whole-request bound is what a caller can plan with; a
  generation longer than `timeout` is cut, so set it above the slowest answer you expect.
* Streams are passed through event by event as they arrive (with the client's
  backpressure), while the content, tool calls, finish reason and usage are assembled
  from the SSE events for the trace. A client that hangs up mid-stream ends the upstream
  request; the partial exchange is recorded with an error. A stream the upstream breaks
  off or does not finish in time ends with an SSE error event (never half an event), so
  the SDKs raise instead of returning a cut answer as a whole one.
* Upstream errors reach the client as they came (status, body, `Retry-After` and the
  other headers) and are recorded. When the upstream cannot be reached the client gets
  502 (504 on a timeout), and so does the trace. A connection that fails before any
  response (a keep-alive connection the upstream closed as it was reused) is retried once.
* The upstream key is never logged, never written to a trace (every line is scrubbed of
  it as a last guard), and scrubbed from every body, header and stream event sent back
  to clients (an upstream that quotes the key in an error message or echoes it).
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
     "response": {"model": str | null,
                  "content": str | null,        # null for a reply of tool calls only,
                                                # streamed or not
                  "reasoning_content": str | null,  # the reasoning text (reasoning_content,
                                                # or reasoning), from the message or deltas
                  "tool_calls": [...] | null,   # wire format: id, type, function{name, arguments};
                                                # streamed: id/type/name from the first fragment
                                                # that has them, arguments concatenated
                  "finish_reason": str | null} | null,    # null on an HTTP error
     "usage": {"prompt_tokens": int, "completion_tokens": int, "total_tokens": int} | null,
     "error": {"status": int, "body": <upstream error body, JSON or text>} | null}

Request messages are recorded as sent, `reasoning_content` of assistant turns included.
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

from lmgym.errors import UsageError

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
# Request headers never forwarded: the client's token, what httpx sets itself, and hop-by-hop.
NEVER_FORWARDED = HOP_BY_HOP | {b"authorization", b"host", b"content-length", b"accept-encoding", b"expect"}
# Request headers that carry the client's credentials or pick whose account the upstream
# key acts for: not forwarded unless the proxy is told to (`forward_headers`).
CREDENTIAL_HEADER = re.compile(rb"cookie|auth|api-?key|token|secret|password|credential|^openai-(organization|project)$")
# Response headers not forwarded: httpx has decoded the body, and we frame it ourselves.
DROP_RESPONSE = HOP_BY_HOP | {b"content-length", b"content-encoding"}
# A model id in GET /v1/models/{id}: one path segment of these characters, never only dots.
MODEL_ID = re.compile(r"[A-Za-z0-9._:@+=~-]{1,256}")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
TRACE_FILE = re.compile(r"traces-(\d{5,})\.jsonl")


def upstream_route(method: str, path: str) -> str | None:
    """The upstream path (after the upstream's base URL) of an allowed request, else None.

    `path` is the decoded request path. Only exact routes pass, so nothing a client writes
    (dot-segments, encoded `/`, `?`, `#`, CR/LF) can steer the upstream key elsewhere.
    """
    if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
        return path.removeprefix("/v1")
    if method == "GET" and path == "/v1/models":
        return "/models"
    model = path.removeprefix("/v1/models/") if method == "GET" else path
    if model != path and MODEL_ID.fullmatch(model) and model.strip("."):
        return "/models/" + model
    return None


def forwarded_headers(headers: list[tuple[bytes, bytes]], allowed: frozenset[bytes] = frozenset()) -> list[tuple[bytes, bytes]]:
    """The client's request headers that go upstream: not hop-by-hop (nor named by its
    `Connection` header), not its token, and no credential header unless `allowed`."""
    named = {n.strip().lower() for k, v in headers if k == b"connection" for n in v.split(b",")}
    return [
        (k, v) for k, v in headers
        if k not in NEVER_FORWARDED and k not in named and (k in allowed or not CREDENTIAL_HEADER.search(k))
    ]


def forwardable_header_names(names: Iterable[str]) -> frozenset[bytes]:
    """`forward_headers` as compared with request headers (lower case). Naming one that is
    never forwarded (the client's token, hop-by-hop, framing) is a mistake, said at once."""
    allowed = set()
    for name in names:
        if not HEADER_NAME.fullmatch(name):
            raise UsageError(f"--forward-header {name!r}: not an HTTP header name")
        key = name.lower().encode()
        if key in NEVER_FORWARDED:
            raise UsageError(f"--forward-header {name}: this header is never forwarded (the client's token is "
                             "replaced by the upstream key; hop-by-hop and framing headers belong to one connection)")
        allowed.add(key)
    return frozenset(allowed)


def http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with a deadline on request headers, which uvicorn lacks: a
    connection whose request headers are not complete `header_timeout` seconds after it
    opened, or after that request's first byte, is closed. Without it a client that sends
    its headers a byte at a time (slowloris) holds a connection and its memory for ever.
    Idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class HeaderDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_header_timer()

        def data_received(self, data: bytes) -> None:
            if not self._in_request():
                self._start_header_timer()
            super().data_received(data)
            if self._in_request():
                self._stop_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_timer()
            super().connection_lost(exc)

        def _in_request(self) -> bool:
            """A request's headers have arrived and its response is not finished."""
            return self.cycle is not None and not self.cycle.response_complete

        def _start_header_timer(self) -> None:
            if self._header_timer is None:
                self._header_timer = asyncio.get_running_loop().call_later(header_timeout, self._headers_too_slow)

        def _stop_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            logger.info("closed a connection whose request headers did not arrive within %gs", header_timeout)
            self.transport.close()

    return HeaderDeadlineProtocol


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
        content, tool_calls, reasoning = message.get("content"), message.get("tool_calls") or None, reasoning_of(message)
    else:
        content, tool_calls, reasoning = choice.get("text"), None, None
    return response_record(data.get("model"), content, tool_calls, choice.get("finish_reason"), reasoning), summarise_usage(data.get("usage"))


def response_record(model: Any, content: Any, tool_calls: list | None, finish_reason: Any, reasoning: str | None) -> dict[str, Any]:
    """The trace's `response`, the same for a reply streamed or not: a reply of tool calls
    only has `content` null (servers stream it as "" or send nothing)."""
    if tool_calls and content == "":
        content = None
    return {"model": model, "content": content, "reasoning_content": reasoning, "tool_calls": tool_calls, "finish_reason": finish_reason}


def reasoning_of(message: dict[str, Any]) -> str | None:
    """A message's or delta's reasoning text: `reasoning_content` (vLLM's reasoning parsers,
    DeepSeek, llama.cpp), or `reasoning` (newer vLLM, OpenRouter)."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str):
            return message[key]
    return None


class StreamAssembler:
    """Rebuilds a streamed (SSE) completion from the bytes as they pass: feed, then result."""

    def __init__(self, route: str):
        self.chat = route == "/chat/completions"
        self._buffer = b""
        self._data: list[bytes] = []  # the data lines of the event being read
        self.model: str | None = None
        self.parts: list[str] = []
        self.reasoning: list[str] = []
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
        calls = [_complete_call(self.tool_calls[i]) for i in sorted(self.tool_calls)] or None
        reasoning = "".join(self.reasoning) if self.reasoning else None
        return response_record(self.model, "".join(self.parts), calls, self.finish_reason, reasoning), self.usage

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
        if (reasoning := reasoning_of(delta)) is not None:
            self.reasoning.append(reasoning)
        for fragment in delta.get("tool_calls") or ():
            self._add_tool_call_fragment(fragment)

    def _add_tool_call_fragment(self, fragment: dict[str, Any]) -> None:
        """Merged by index: id, type and name are set by the first fragment that has them
        (OpenAI sends them once, llama.cpp in every fragment); arguments are concatenated."""
        call = self.tool_calls.setdefault(
            fragment.get("index", 0), {"id": None, "type": None, "function": {"name": None, "arguments": ""}}
        )
        function = fragment.get("function") or {}
        call["id"] = call["id"] or fragment.get("id")
        call["type"] = call["type"] or fragment.get("type")
        call["function"]["name"] = call["function"]["name"] or function.get("name")
        call["function"]["arguments"] += function.get("arguments") or ""


def _complete_call(call: dict[str, Any]) -> dict[str, Any]:
    """A streamed tool call in the wire format, whatever fragments it lacked."""
    return {"id": call["id"], "type": call["type"] or "function",
            "function": {"name": call["function"]["name"] or "", "arguments": call["function"]["arguments"]}}


def _decode_body(data: bytes) -> Any:
    """An error body as recorded: its JSON when it parses, else its text."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")


def _error_payload(message: str, kind: str = "proxy_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def split_after_last_event(data: bytes) -> tuple[bytes, bytes]:
    """`data` of an SSE stream cut after its last complete event (one ending in a blank
    line): what can go to the client now, and the start of an event still arriving.
    Relaying whole events only means the key can be scrubbed from each (it cannot hide
    across a network chunk) and a stream that breaks off never leaves half an event."""
    end = max((i + len(blank) for blank in (b"\n\n", b"\n\r\n") if (i := data.rfind(blank)) != -1), default=0)
    return data[:end], data[end:]


class Refused(Exception):
    """A request the proxy answers itself, forwarding and recording nothing."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status = status
        self.payload = _error_payload(message, "invalid_request_error", code)


async def read_body(receive, declared_length: int | None, limit: int, timeout: float) -> bytes | None:
    """The whole request body, or None when the client hung up before sending all of it.

    Refused with 413 past `limit` bytes (before reading anything when Content-Length says
    so), and with 408 when it has not all arrived within `timeout` seconds.
    """
    too_large = Refused(413, f"the request body is larger than the proxy's limit of {limit:,} bytes (lmgym proxy --max-body-mb)", "request_too_large")
    if declared_length is not None and declared_length > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                event = await receive()
                if event["type"] == "http.disconnect":
                    return None
                chunk = event.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
                if not event.get("more_body"):
                    return b"".join(chunks)
    except TimeoutError:
        raise Refused(408, f"the request body did not arrive within {timeout:g}s (lmgym proxy --client-timeout)", "request_timeout") from None


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


async def _send_whole(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] = ()) -> None:
    await _send_whole(send, status, orjson.dumps(payload), [(b"content-type", b"application/json"), *headers])


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
    async def send(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes | None, *, deadline: float):
        """The upstream's response (its headers; the body is read as it comes), closed on
        exit; TimeoutError when it has not begun by `deadline` (the event loop's clock).
        A connection that fails before any response came back is retried once: nearly
        always a keep-alive connection the upstream closed just as it was reused, a race
        every HTTP client has. Should the upstream instead have received the request and
        then died, it runs twice (the client still gets one answer and the trace one
        record). Timeouts are not retried."""
        shard = min(range(len(self._busy)), key=self._busy.__getitem__)
        if self._clients[shard] is None:  # created on first use, inside the serving event loop
            self._ssl = self._ssl or _http.create_ssl_context()
            self._clients[shard] = _http.AsyncClient(timeout=self._timeout, limits=self._limits, verify=self._ssl)
        client = self._clients[shard]
        self._busy[shard] += 1
        try:
            async with asyncio.timeout_at(deadline):
                try:
                    response = await client.send(client.build_request(method, url, headers=headers, content=body), stream=True)
                except (_http.NetworkError, _http.RemoteProtocolError) as exc:
                    logger.debug("upstream connection failed before a response (%s); retrying once", type(exc).__name__)
                    response = await client.send(client.build_request(method, url, headers=headers, content=body), stream=True)
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
    """The ASGI app. `token=None` accepts every client; `upstream_key=None` sends no key upstream.

    `timeout` bounds each upstream request as a whole, from connecting to its last byte;
    `max_body_bytes` and `client_timeout` bound what a client may send and how slowly;
    `forward_headers` names credential headers of the client that do go upstream.
    """

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
        max_body_bytes: int = 32 * 2**20,
        client_timeout: float = 60.0,
        forward_headers: Iterable[str] = (),
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
        self._max_body_bytes = max_body_bytes
        self._client_timeout = client_timeout
        self._forward_headers = forwardable_header_names(forward_headers)
        self._pool = UpstreamPool(timeout=timeout, max_connections=max_connections)

    def __repr__(self) -> str:  # never shows a key
        return f"ProxyApp(upstream={self.upstream!r}, traces={str(self.writer.directory)!r})"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        route = upstream_route(method, path)
        if not self._authorised(scope["headers"]):
            await _send_json(send, 401, _error_payload(
                "missing or wrong proxy token: send it as the API key (Authorization: Bearer TOKEN)",
                "invalid_request_error", "invalid_api_key",
            ))
        elif route is None:
            await _send_json(send, 404, _error_payload(f"the proxy does not serve {method} {path}", code="not_found"))
        elif scope.get("query_string"):
            await _send_json(send, 400, _error_payload(
                f"the proxy forwards no query strings (the OpenAI API's {path} takes none)", "invalid_request_error", "query_string"))
        elif route in TRACED_ROUTES:
            await self._exchange(route, scope, receive, send)
        else:
            await self._forward_untraced(route, scope, send)

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

    def _upstream_request(self, route: str, scope) -> tuple[str, str, list[tuple[bytes, bytes]]]:
        """Method, URL and headers of the upstream request: an allowed route, the client's
        headers less hop-by-hop and credential ones, and our key."""
        headers = forwarded_headers(scope["headers"], self._forward_headers)
        if self._upstream_auth is not None:
            headers.append((b"authorization", self._upstream_auth))
        return scope["method"], self.upstream + route, headers

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._timeout

    def _scrub(self, data: bytes) -> bytes:
        return data.replace(self._secret, b"***") if self._secret and self._secret in data else data

    def _response_headers(self, response) -> list[tuple[bytes, bytes]]:
        return [(k.lower(), self._scrub(v)) for k, v in response.headers.raw if k.lower() not in DROP_RESPONSE]

    async def _exchange(self, route: str, scope, receive, send) -> None:
        try:
            body = await read_body(receive, _content_length(scope["headers"]), self._max_body_bytes, self._client_timeout)
        except Refused as refused:
            logger.warning("refused %s %s: %s", scope["method"], scope["path"], refused)
            await _send_json(send, refused.status, refused.payload, [(b"connection", b"close")])  # not the rest of its body
            return
        if body is None:
            logger.info("a client hung up before its request body had arrived: nothing forwarded")
            return
        exchange = _Exchange(self, route, scope, send, body)
        try:
            try:
                async with self._pool.send(*self._upstream_request(route, scope), body, deadline=exchange.deadline) as response:
                    await self._relay(exchange, response, receive)
            except (_http.TransportError, TimeoutError) as exc:
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
        headers = self._response_headers(response)
        if response.status_code < 400 and response.headers.get("content-type", "").startswith("text/event-stream"):
            await self._stream(exchange, response, headers, receive)
            return
        try:
            async with asyncio.timeout_at(exchange.deadline):
                data = self._scrub(await response.aread())
        except (_http.TransportError, TimeoutError) as exc:  # the body broke off or stalled: nothing was sent yet
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
        pending = b""  # the start of an event not yet complete
        broken: dict[str, Any] | None = None  # the error the client is told of, when the upstream failed

        def collect() -> None:
            record["response"], record["usage"] = assembler.result()
            if assembler.error is not None and record["error"] is None:
                record["error"] = {"status": response.status_code, "body": assembler.error}

        hung_up = asyncio.ensure_future(receive())  # completes when the client disconnects
        chunks = response.aiter_bytes()
        try:
            while True:
                async with asyncio.timeout_at(exchange.deadline):
                    chunk = await anext(chunks, None)
                if chunk is None:
                    break
                if hung_up.done():
                    record["error"] = {"status": 499, "body": "the client disconnected before the stream ended"}
                    break
                assembler.feed(chunk)
                if assembler.done:  # clients stop reading at [DONE]: record the exchange before they can
                    collect()
                    exchange.finish()
                ready, pending = split_after_last_event(pending + chunk)
                if ready:
                    await send({"type": "http.response.body", "body": self._scrub(ready), "more_body": True})
        except _http.TransportError as exc:
            message = self._scrub(f"the upstream stream broke: {type(exc).__name__}: {exc}".encode()).decode()
            broken = _error_payload(message, code="upstream_stream_broken")
            record["error"] = {"status": 502, "body": message}
        except TimeoutError:
            message = f"the upstream did not finish within {self._timeout:g}s (lmgym proxy --timeout)"
            broken = _error_payload(message, code="upstream_timeout")
            record["error"] = {"status": 504, "body": message}
        finally:
            hung_up.cancel()
            collect()
        exchange.finish()
        if broken is None:
            tail = self._scrub(pending)  # the upstream ended: the rest as it came
        else:  # the half event is dropped; the SDKs raise on an error event, so the client knows
            tail = b"" if assembler.done else b"data: " + orjson.dumps(broken) + b"\n\n"
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    def _unreachable(self, exc: Exception) -> tuple[int, dict[str, Any]]:
        if isinstance(exc, (_http.TimeoutException, TimeoutError)):
            return 504, _error_payload(
                f"the upstream did not finish within {self._timeout:g}s (lmgym proxy --timeout)", code="upstream_timeout")
        detail = self._scrub(f"{type(exc).__name__}: {exc}".encode()).decode()
        return 502, _error_payload(f"cannot reach the upstream {self.upstream}: {detail}", code="upstream_unreachable")

    async def _forward_untraced(self, route: str, scope, send) -> None:
        deadline = self._deadline()
        try:
            async with self._pool.send(*self._upstream_request(route, scope), None, deadline=deadline) as response:
                async with asyncio.timeout_at(deadline):
                    data = await response.aread()
                status, headers = response.status_code, self._response_headers(response)
        except (_http.TransportError, TimeoutError) as exc:
            await _send_json(send, *self._unreachable(exc))
            return
        await _send_whole(send, status, self._scrub(data), headers)


class _Exchange:
    """One traced request: its trace record, written once, just before the last bytes go
    back to the client (so a client that has its answer has its trace)."""

    def __init__(self, app: ProxyApp, route: str, scope, send, body: bytes):
        self.app, self.route, self.send, self.body = app, route, send, body
        self.started = time.perf_counter()
        self.deadline = app._deadline()  # of the upstream request, connect to last byte
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
