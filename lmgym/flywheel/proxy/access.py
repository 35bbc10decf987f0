"""What a client may ask of the proxy: the route allow-list, the headers that go upstream,
and the bounds on a request's headers and body.

Kept together because they are the proxy's security surface: nothing a client sends
reaches the upstream (with the upstream's key) without passing through here.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable
from typing import Any

from lmgym.errors import UsageError

logger = logging.getLogger(__name__)

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


def error_payload(message: str, kind: str = "proxy_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class Refused(Exception):
    """A request the proxy answers itself, forwarding and recording nothing."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status = status
        self.payload = error_payload(message, "invalid_request_error", code)


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
