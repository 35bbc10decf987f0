"""`UpstreamPool`: the proxy's connections to the upstream API.

Its own module because how requests reach the upstream (httpx clients in shards, one
retry of a connection that failed before any response, a deadline over the whole
request) is independent of what the proxy records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

try:  # openai>=3 depends on httpx2 (the same API); older releases on httpx
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as _http  # type: ignore[no-redef]

logger = logging.getLogger(__name__)


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
