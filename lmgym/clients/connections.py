"""`Connections`: the keep-alive HTTP/1.1 connections one `OpenAIClient` sends over (a few
lines over 400: a whole HTTP/1.1 client, kept in one place to keep its hot path visible).

A small client on asyncio's protocols, because the HTTP libraries cost more CPU per
request than everything else in a rollout. Measured on 2 cores against an instant
loopback server, client CPU per chat request: the OpenAI SDK over httpx ~2,500 µs (a third
of it in httpx's pool, which scans every pooled connection on each request), aiohttp
driven directly ~165 µs, this ~50 µs (benchmarks/eval_overhead.py measures the whole path).

What it does: POST with a Content-Length body; replies framed by Content-Length,
chunked transfer coding or the end of the connection, gzip/deflate decoded; keep-alive
connections reused last-in first-out, as many as requests in flight (or at most
`max_connections`) per event loop, so the pool is sized to the caller's concurrency; a
reused connection that the server closed before answering (an idle keep-alive timeout)
is replaced once, at once, and one idle for more than 5 s is not reused (as httpx: it may
have been dropped on the way without a word); https through the ssl module's default context (system CAs,
SSL_CERT_FILE); the proxies of the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY,
NO_PROXY), read once: plain http through an http proxy, https tunnelled with CONNECT.
Redirects are not followed: an API endpoint that redirects is misconfigured, and the
error names where it points. Timeouts are the caller's: it bounds each request as a whole.

A pool belongs to the event loop that opened its connections, so there is one per loop,
opened on the first request made from it.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote, urlsplit

MAX_HEAD_BYTES = 64 * 1024
KEEPALIVE_EXPIRY_S = 5.0  # as httpx: a connection idle longer may have been dropped on the way without a word


class ProtocolError(ConnectionError):
    """The server broke HTTP/1.1: a reply that cannot be read, or a connection that ended mid-reply."""


class ConnectionClosed(ProtocolError):
    """The connection ended before any byte of the reply arrived."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    content: bytes


@dataclass(frozen=True)
class Target:
    """Where requests go: the origin, the request line's target, and the proxy if any."""

    scheme: str
    host: str
    port: int
    path: str  # with the query, as sent in the request line to the origin
    proxy: tuple[str, int, str | None] | None = None  # host, port, Proxy-Authorization value

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path, _env_proxy(parts.scheme, parts.hostname))

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def request_head(self, headers: Mapping[str, str]) -> bytes:
        """The request line and headers up to Content-Length's value."""
        target = self.path
        lines = [f"Host: {self.authority}"]
        if self.proxy is not None and self.scheme == "http":  # absolute form, through the proxy
            target = f"http://{self.authority}{self.path}"
            if self.proxy[2]:
                lines.append(f"Proxy-Authorization: {self.proxy[2]}")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return (f"POST {target} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines) + "Content-Length: ").encode("latin-1")


def _env_proxy(scheme: str, host: str) -> tuple[str, int, str | None] | None:
    """The proxy the environment names for `scheme` (None when none, or NO_PROXY covers `host`)."""
    import urllib.request  # only here: a few ms, once per client

    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme) or proxies.get("all")
    if not url or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported proxy {parts.scheme}://{parts.hostname} (only http:// proxies are)")
    auth = None
    if parts.username is not None:
        token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
        auth = f"Basic {token}"
    return parts.hostname, parts.port or 80, auth


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends a request, gathers its reply (one at a time)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._no_body = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.length = -1  # bytes of body still to come; -1: chunked; -2: until the connection ends
        self.body = bytearray()
        self.received = False

    # -- asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                self._parse()
            except ProtocolError as exc:
                self._fail(exc)

    def eof_received(self) -> None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.status and self.length == -2:  # the body ends with the connection
            self.body += self.buffer
            self.buffer.clear()
            self._done()
        elif not self.received:
            self._fail(ConnectionClosed("the server closed the connection before answering"))
        else:
            self._fail(ProtocolError(f"the server closed the connection in the middle of its reply ({exc or 'no error'})"))

    # -- requests
    async def exchange(self, data: bytes, *, no_body: bool = False) -> Reply:
        """Send `data` (a whole request), return the reply. `no_body`: the reply to a CONNECT."""
        loop = asyncio.get_running_loop()
        self._reset()
        self._no_body = no_body
        self.reusable = False
        waiter = self.waiter = loop.create_future()
        if self.closed:
            raise ConnectionClosed("the server closed the connection before answering")
        self.transport.write(data)
        if self.buffer:  # bytes that came unasked: a server that does not speak HTTP/1.1 as asked
            self._parse()
        return await waiter

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.reusable = False

    def _done(self) -> None:
        content = bytes(self.body)
        encoding = self.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            # gzip; deflate as it should be (zlib-wrapped), or raw as some servers send it
            formats = [16 + zlib.MAX_WBITS] if encoding != "deflate" else [zlib.MAX_WBITS, -zlib.MAX_WBITS]
            for number, wbits in enumerate(formats, start=1):
                try:
                    content = zlib.decompress(content, wbits)
                    break
                except zlib.error as exc:
                    if number == len(formats):
                        self._fail(ProtocolError(f"a {encoding} body that does not decompress: {exc}"))
                        return
        if self.buffer:  # more than the reply: never reuse this connection
            self.reusable = False
        self.waiter.set_result(Reply(self.status, self.headers, content))

    def _parse(self) -> None:
        buffer = self.buffer
        while not self.status:  # the head (skipping any 1xx interim replies)
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ProtocolError("a reply head longer than 64 KiB")
                return
            self._read_head(bytes(buffer[:end]))
            del buffer[: end + 4]
        if self.length >= 0:
            if len(buffer) < self.length:
                return
            self.body += buffer[: self.length]
            del buffer[: self.length]
            self.length = 0
            self._done()
        elif self.length == -1:
            self._read_chunks()

    def _read_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ProtocolError(f"not an HTTP/1.1 reply: {lines[0][:80]!r}")
        status = int(code)
        if 100 <= status < 200 and status != 101:
            return  # interim: the real reply follows
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                name = name.strip().lower()
                headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
        self.status, self.headers = status, headers
        connection = headers.get("connection", "").lower()
        self.reusable = ("keep-alive" in connection) if version == "HTTP/1.0" else ("close" not in connection)
        if self._no_body or status in (204, 304) or status < 200:
            self.length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self.length = -1
        elif "content-length" in headers:
            try:
                self.length = int(headers["content-length"].split(",")[0])
            except ValueError:
                raise ProtocolError(f"Content-Length {headers['content-length']!r}") from None
        else:
            self.length = -2
            self.reusable = False

    def _read_chunks(self) -> None:
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                return
            size_text = bytes(buffer[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"a chunk size {size_text[:20]!r}") from None
            if size == 0:  # the last chunk, then trailers up to an empty line
                rest = buffer.find(b"\r\n", end + 2) if buffer[end + 2: end + 4] == b"\r\n" else buffer.find(b"\r\n\r\n", end + 2)
                if rest < 0:
                    return
                del buffer[: (end + 4) if buffer[end + 2: end + 4] == b"\r\n" else rest + 4]
                self._done()
                return
            if len(buffer) < end + 2 + size + 2:
                return
            self.body += buffer[end + 2: end + 2 + size]
            del buffer[: end + 2 + size + 2]


class _LoopPool:
    """The connections of one event loop."""

    def __init__(self, max_connections: int | None):
        self.idle: deque[Connection] = deque()
        self.slots = asyncio.Semaphore(max_connections) if max_connections else None
        self.open: set[Connection] = set()
        self.clock = asyncio.get_running_loop().time

    def expired(self, connection: Connection) -> bool:
        return self.clock() - connection.idle_since > KEEPALIVE_EXPIRY_S

    def release(self, connection: Connection) -> None:
        """Back to the pool; those idle too long (the oldest, at the left end) are closed."""
        connection.idle_since = self.clock()
        idle = self.idle
        while idle and self.expired(idle[0]):
            self.drop(idle.popleft())
        idle.append(connection)

    def drop(self, connection: Connection) -> None:
        self.open.discard(connection)
        if connection.transport is not None:
            connection.transport.close()


class Connections:
    """Keep-alive connections to one endpoint, pooled per event loop; at most
    `max_connections` open at once in each (None: as many as requests in flight)."""

    def __init__(self, url: str, headers: Mapping[str, str], max_connections: int | None):
        self.target = Target.parse(url)
        self.max_connections = max_connections
        self._head = self.target.request_head(headers)
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: _LoopPool | None = None
        self._ssl: ssl.SSLContext | None = None

    def _loop_pool(self) -> _LoopPool:
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return self._pool
        for old in [old for old in self._pools if old.is_closed()]:
            del self._pools[old]  # their sockets close when collected
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = _LoopPool(self.max_connections)
        self._loop, self._pool = loop, pool
        return pool

    async def post(self, body: bytes) -> Reply:
        """POST `body` (JSON bytes) to the endpoint; the reply, whatever its status."""
        pool = self._loop_pool()
        request = b"".join((self._head, str(len(body)).encode(), b"\r\n\r\n", body))
        if pool.slots is None:
            return await self._send(pool, request)
        async with pool.slots:
            return await self._send(pool, request)

    async def _send(self, pool: _LoopPool, request: bytes) -> Reply:
        while pool.idle:  # the most recently used connection first
            connection = pool.idle.pop()
            if connection.closed or connection.buffer or pool.expired(connection):  # or sent bytes unasked since
                pool.drop(connection)
                continue
            try:
                return await self._exchange(pool, connection, request)
            except ConnectionClosed:  # it had timed out at the server: once more on a new one
                break
        return await self._exchange(pool, await self._connect(pool), request)

    async def _exchange(self, pool: _LoopPool, connection: Connection, request: bytes) -> Reply:
        reused = False
        try:
            reply = await connection.exchange(request)
            reused = connection.reusable and not connection.closed
            return reply
        finally:
            if reused:
                pool.release(connection)
            else:
                pool.drop(connection)

    async def _connect(self, pool: _LoopPool) -> Connection:
        loop = asyncio.get_running_loop()
        target = self.target
        tls = self._tls() if target.scheme == "https" else None
        if target.proxy is None:
            _, connection = await loop.create_connection(
                Connection, target.host, target.port, ssl=tls, server_hostname=target.host if tls else None
            )
        else:
            proxy_host, proxy_port, auth = target.proxy
            _, connection = await loop.create_connection(Connection, proxy_host, proxy_port)
            if tls is not None:
                await self._tunnel(loop, connection, tls, auth)
        pool.open.add(connection)
        return connection

    async def _tunnel(self, loop: asyncio.AbstractEventLoop, connection: Connection, tls: ssl.SSLContext, auth: str | None) -> None:
        """CONNECT through the proxy, then TLS with the origin over that tunnel."""
        target = self.target
        lines = [f"CONNECT {target.host}:{target.port} HTTP/1.1", f"Host: {target.host}:{target.port}"]
        if auth:
            lines.append(f"Proxy-Authorization: {auth}")
        try:
            reply = await connection.exchange(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), no_body=True)
            if not 200 <= reply.status < 300:
                raise ProtocolError(f"the proxy refused to connect to {target.host}:{target.port} (HTTP {reply.status})")
            connection.transport = await loop.start_tls(connection.transport, connection, tls, server_hostname=target.host)
        except BaseException:
            connection.transport.close()
            raise

    def _tls(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    async def aclose(self) -> None:
        """Close the running loop's connections (those of closed loops went with them)."""
        loop = asyncio.get_running_loop()
        pool = self._pools.pop(loop, None)
        if self._loop is loop:
            self._loop, self._pool = None, None
        if pool is not None:
            for connection in pool.open:
                if connection.transport is not None:
                    connection.transport.close()
            pool.open.clear()
            pool.idle.clear()
