"""`ProxyApp`: the ASGI app that checks a request, forwards it upstream, relays the answer
(streamed or not) and hands each chat/completions exchange to the `TraceWriter`.

The package docstring is what it guarantees; the parts it puts together sit beside it
(`access`, `upstream`, `record`, `stream`, `writer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import orjson

from lmgym.flywheel.proxy.access import (
    DROP_RESPONSE,
    Refused,
    error_payload,
    forwardable_header_names,
    forwarded_headers,
    read_body,
    upstream_route,
)
from lmgym.flywheel.proxy.record import summarise_request, summarise_response
from lmgym.flywheel.proxy.stream import StreamAssembler, split_after_last_event
from lmgym.flywheel.proxy.upstream import UpstreamPool, _http
from lmgym.flywheel.proxy.writer import TraceWriter

logger = logging.getLogger(__name__)

TRACED_ROUTES = {"/chat/completions": "/v1/chat/completions", "/completions": "/v1/completions"}


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
            await _send_json(send, 401, error_payload(
                "missing or wrong proxy token: send it as the API key (Authorization: Bearer TOKEN)",
                "invalid_request_error", "invalid_api_key",
            ))
        elif route is None:
            await _send_json(send, 404, error_payload(f"the proxy does not serve {method} {path}", code="not_found"))
        elif scope.get("query_string"):
            await _send_json(send, 400, error_payload(
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
            broken = error_payload(message, code="upstream_stream_broken")
            record["error"] = {"status": 502, "body": message}
        except TimeoutError:
            message = f"the upstream did not finish within {self._timeout:g}s (lmgym proxy --timeout)"
            broken = error_payload(message, code="upstream_timeout")
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
            return 504, error_payload(
                f"the upstream did not finish within {self._timeout:g}s (lmgym proxy --timeout)", code="upstream_timeout")
        detail = self._scrub(f"{type(exc).__name__}: {exc}".encode()).decode()
        return 502, error_payload(f"cannot reach the upstream {self.upstream}: {detail}", code="upstream_unreachable")

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


def _decode_body(data: bytes) -> Any:
    """An error body as recorded: its JSON when it parses, else its text."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")


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
