"""OpenAIClient's own HTTP/1.1 client (`lmgym.clients.connections`) against raw servers on
loopback that answer byte for byte as scripted: reply framings, keep-alive and its
timeouts, broken replies, redirects, proxies, TLS, and the pool's limit."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import ssl
import subprocess
import zlib
from typing import Awaitable, Callable

import orjson
import pytest

from lmgym import errors
from lmgym.clients import connections
from lmgym.clients.connections import Connections, Target
from lmgym.clients.openai import OpenAIClient

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]
GOOD = orjson.dumps({
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
})


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes] | None:
    """One request off the wire: its request line, headers (lower-case names), body."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", 0)))
    return lines[0].encode(), headers, body


def reply(body: bytes = GOOD, status: str = "200 OK", headers: tuple[str, ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(handler: Handler, ssl_context: ssl.SSLContext | None = None):
    """A TCP server on loopback whose `handler(reader, writer, state)` speaks for each
    connection; yields (base URL, state) where state counts `connections` and `requests`."""
    state: dict = {"connections": 0, "requests": [], "tasks": set()}

    async def on_connect(reader, writer):
        state["connections"] += 1
        state["tasks"].add(asyncio.current_task())
        try:
            await handler(reader, writer, state)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://{'localhost' if ssl_context else '127.0.0.1'}:{port}/v1", state
    finally:
        server.close()
        for task in state["tasks"]:
            task.cancel()
        await asyncio.gather(*state["tasks"], return_exceptions=True)


def answering(*replies: bytes, close_after: bool = False) -> Handler:
    """Answers the requests of each connection with `replies` in turn (the last repeats)."""

    async def handler(reader, writer, state):
        while (request := await read_request(reader)) is not None:
            state["requests"].append(request)
            index = min(len(state["requests"]), len(replies)) - 1
            writer.write(replies[index])
            await writer.drain()
            if close_after:
                return

    return handler


def client(base_url: str, **kwargs) -> OpenAIClient:
    return OpenAIClient(base_url, "sk-test-key", **{"backoff_base": 0.01, "backoff_max": 0.02, "max_retries": 0, **kwargs})


async def chat(base_url: str, **kwargs):
    one = client(base_url, **kwargs)
    try:
        return await one.chat(MESSAGES, model="m")
    finally:
        await one.aclose()


# -- the request ---------------------------------------------------------------------------------
async def test_the_request_carries_the_key_the_json_body_and_the_sdk_headers(monkeypatch):
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1")
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    async with raw_server(answering(reply())) as (base_url, state):
        await chat(base_url + "/")  # a trailing slash is not doubled
    line, headers, body = state["requests"][0]
    assert line == b"POST /v1/chat/completions HTTP/1.1"
    assert headers["authorization"] == "Bearer sk-test-key" and headers["content-type"] == "application/json"
    assert headers["host"] == base_url.split("//")[1].split("/")[0]
    assert headers["openai-organization"] == "org-1" and "openai-project" not in headers
    assert orjson.loads(body) == {"model": "m", "messages": MESSAGES}


async def test_the_base_url_comes_from_the_environment_as_the_sdk_reads_it(monkeypatch):
    async with raw_server(answering(reply())) as (base_url, state):
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
        response = await chat(None)
    assert response.message["content"] == "4" and len(state["requests"]) == 1


def test_a_base_url_that_is_not_http_is_a_usage_error():
    with pytest.raises(errors.UsageError, match="not an http"):
        OpenAIClient("localhost:8000/v1")


def test_the_request_target_keeps_a_query_and_brackets_an_ipv6_host():
    target = Target.parse("http://[::1]:8000/v1/chat/completions?api-version=2")
    assert target.path == "/v1/chat/completions?api-version=2" and target.authority == "[::1]:8000"
    assert Target.parse("https://api.example.com/v1").authority == "api.example.com"


# -- reply framings -------------------------------------------------------------------------------
def chunked(body: bytes, size: int = 7, trailer: str = "") -> bytes:
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    chunks = b"".join(f"{len(p):x};ext=1\r\n".encode() + p + b"\r\n" for p in pieces)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n" + trailer.encode() + b"\r\n"


@pytest.mark.parametrize("framing", ["chunked", "chunked with a trailer", "gzip", "deflate", "raw deflate", "until the end",
                                     "after a 100 Continue", "byte by byte"])
async def test_every_framing_of_a_reply_is_read(framing):
    raw = {
        "chunked": chunked(GOOD),
        "chunked with a trailer": chunked(GOOD, trailer="X-Checksum: 1\r\n"),
        "gzip": reply(gzip.compress(GOOD), headers=("Content-Encoding: gzip",)),
        "deflate": reply(zlib.compress(GOOD), headers=("Content-Encoding: deflate",)),
        "raw deflate": reply(zlib.compress(GOOD, wbits=-zlib.MAX_WBITS), headers=("Content-Encoding: deflate",)),
        "until the end": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + GOOD,
        "after a 100 Continue": b"HTTP/1.1 100 Continue\r\n\r\n" + reply(),
        "byte by byte": reply(),
    }[framing]

    async def handler(reader, writer, state):
        while (request := await read_request(reader)) is not None:
            state["requests"].append(request)
            if framing == "byte by byte":
                for i in range(len(raw)):
                    writer.write(raw[i:i + 1])
                    await writer.drain()
            else:
                writer.write(raw)
            if framing == "until the end":
                return  # the end of the connection ends the body

    async with raw_server(handler) as (base_url, state):
        one = client(base_url)
        first = await one.chat(MESSAGES, model="m")
        second = await one.chat(MESSAGES, model="m")
        await one.aclose()
    assert first.message["content"] == second.message["content"] == "4"
    assert first.usage.prompt_tokens == 3
    assert state["connections"] == (2 if framing == "until the end" else 1)


# -- keep-alive -----------------------------------------------------------------------------------
async def test_connections_are_kept_alive_and_reused():
    async with raw_server(answering(reply())) as (base_url, state):
        one = client(base_url)
        for _ in range(5):
            await one.chat(MESSAGES, model="m")
        await asyncio.gather(*(one.chat(MESSAGES, model="m") for _ in range(8)))
        await one.aclose()
    assert len(state["requests"]) == 13 and state["connections"] <= 8


@pytest.mark.parametrize("header", ["Connection: close", None])
async def test_a_connection_the_server_closes_is_not_reused(header):
    # said in the reply, or done silently afterwards (an idle keep-alive timeout)
    async with raw_server(answering(reply(headers=(header,) if header else ()), close_after=True)) as (base_url, state):
        one = client(base_url)
        for _ in range(3):
            assert (await one.chat(MESSAGES, model="m")).message["content"] == "4"
            await asyncio.sleep(0.05)
        await one.aclose()
    assert state["connections"] == 3


async def test_a_connection_idle_past_the_keepalive_expiry_is_not_reused(monkeypatch):
    monkeypatch.setattr(connections, "KEEPALIVE_EXPIRY_S", 0.2)
    async with raw_server(answering(reply())) as (base_url, state):
        one = client(base_url)
        await one.chat(MESSAGES, model="m")
        await one.chat(MESSAGES, model="m")  # at once: the same connection
        await asyncio.sleep(0.3)
        await one.chat(MESSAGES, model="m")  # after the expiry: a new one
        await one.aclose()
    assert state["connections"] == 2 and len(state["requests"]) == 3


async def test_a_reused_connection_closed_before_the_answer_is_replaced_at_once():
    # the server reads the second request of each connection, then hangs up without a word
    async def handler(reader, writer, state):
        for _ in range(2):
            request = await read_request(reader)
            if request is None:
                return
            state["requests"].append(request)
            if state["connections"] == 1 and len(state["requests"]) == 2:
                return
            writer.write(reply())
            await writer.drain()

    async with raw_server(handler) as (base_url, state):
        one = client(base_url)
        await one.chat(MESSAGES, model="m")
        response = await one.chat(MESSAGES, model="m")  # max_retries=0: replaced, not retried
        await one.aclose()
    assert response.message["content"] == "4" and state["connections"] == 2


# -- broken replies -------------------------------------------------------------------------------
@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + GOOD,  # ends before its length
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # ends mid-chunk
    b"SSH-2.0-OpenSSH_9.2\r\n\r\n",  # not HTTP
    b"",  # hangs up on a fresh connection
])
async def test_a_reply_that_breaks_off_is_a_connection_error_and_retried(raw):
    async def handler(reader, writer, state):
        request = await read_request(reader)
        state["requests"].append(request)
        writer.write(raw if len(state["requests"]) == 1 else reply())
        await writer.drain()
        if len(state["requests"]) > 1:
            while await read_request(reader) is not None:
                writer.write(reply())

    async with raw_server(handler) as (base_url, state):
        with pytest.raises(errors.ModelConnectionError, match="cannot reach the model server"):
            await chat(base_url)
        state["requests"].clear()
        response = await chat(base_url, max_retries=1)
    assert response.message["content"] == "4"


async def test_a_gzip_body_that_does_not_decompress_is_a_connection_error():
    async with raw_server(answering(reply(b"not gzip", headers=("Content-Encoding: gzip",)))) as (base_url, _):
        with pytest.raises(errors.ModelConnectionError, match="does not decompress"):
            await chat(base_url)


async def test_a_redirect_is_an_error_that_says_where_it_points():
    redirect = reply(b"", status="308 Permanent Redirect", headers=("Location: https://elsewhere.example/v1/chat/completions",))
    async with raw_server(answering(redirect)) as (base_url, state):
        with pytest.raises(errors.ModelRequestError, match="HTTP 308.*elsewhere.example"):
            await chat(base_url, max_retries=3)
    assert len(state["requests"]) == 1  # a verdict, not retried


async def test_an_error_body_that_is_not_json_is_quoted_and_the_key_scrubbed():
    async with raw_server(answering(reply(b"bad key sk-test-key", status="400 Bad Request"))) as (base_url, _):
        with pytest.raises(errors.ModelRequestError) as info:
            await chat(base_url)
    assert "HTTP 400" in str(info.value) and "bad key ***" in str(info.value) and "sk-test-key" not in str(info.value)


async def test_a_timeout_closes_the_connection_and_the_next_request_opens_another():
    async def handler(reader, writer, state):
        while (request := await read_request(reader)) is not None:
            state["requests"].append(request)
            if len(state["requests"]) == 1:
                await asyncio.sleep(1.0)  # past the client's timeout
            writer.write(reply())

    async with raw_server(handler) as (base_url, state):
        one = client(base_url, timeout=0.2)
        with pytest.raises(errors.ModelTimeoutError):
            await one.chat(MESSAGES, model="m")
        assert (await one.chat(MESSAGES, model="m")).message["content"] == "4"
        await one.aclose()
    assert state["connections"] == 2  # the late reply never reaches the second request


# -- the pool -------------------------------------------------------------------------------------
async def test_at_most_max_connections_are_open_at_once():
    in_flight, most = 0, 0

    async def handler(reader, writer, state):
        nonlocal in_flight, most
        while await read_request(reader) is not None:
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0.02)
            in_flight -= 1
            writer.write(reply())

    async with raw_server(handler) as (base_url, state):
        one = client(base_url, max_connections=3)
        await asyncio.gather(*(one.chat(MESSAGES, model="m") for _ in range(12)))
        await one.aclose()
    assert most == 3 and state["connections"] == 3


def test_each_event_loop_gets_its_own_connections():
    async def run(base_url, one):
        return (await one.chat(MESSAGES, model="m")).message["content"]

    async def serve_and_use_twice():
        async with raw_server(answering(reply())) as (base_url, state):
            one = client(base_url)
            import threading

            results = []
            thread = threading.Thread(target=lambda: results.append(asyncio.run(run(base_url, one))))
            thread.start()
            while thread.is_alive():
                await asyncio.sleep(0.01)
            results.append(await run(base_url, one))  # the first loop closed: its pool is dropped
            await one.aclose()
            return results, state["connections"]

    results, connections = asyncio.run(serve_and_use_twice())
    assert results == ["4", "4"] and connections == 2


# -- proxies and TLS ------------------------------------------------------------------------------
async def forwarding_proxy(seen: list):
    """An HTTP proxy on loopback: forwards absolute-form requests and CONNECT tunnels."""

    async def pipe(reader, writer):
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def on_connect(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head.decode())
        method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            host_port = target.split("//")[1].split("/")[0]
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", int(host_port.rsplit(":", 1)[1]))
            upstream_writer.write(head)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(on_connect, "127.0.0.1", 0)


async def test_plain_http_goes_through_the_environments_proxy(monkeypatch):
    seen: list[str] = []
    proxy = await forwarding_proxy(seen)
    monkeypatch.setenv("HTTP_PROXY", f"http://user:pass@127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    async with raw_server(answering(reply())) as (base_url, state):
        response = await chat(base_url)
    proxy.close()
    assert response.message["content"] == "4"
    assert seen[0].startswith(f"POST {base_url}/chat/completions HTTP/1.1")
    assert "Proxy-Authorization: Basic dXNlcjpwYXNz" in seen[0]  # user:pass


def test_no_proxy_and_unsupported_proxies(monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert Target.parse("http://127.0.0.1:8000/v1").proxy is None
    assert Target.parse("http://models.internal:8000/v1").proxy == ("127.0.0.1", 9, None)
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:1080")
    monkeypatch.delenv("HTTP_PROXY")
    with pytest.raises(errors.UsageError, match="unsupported proxy socks5"):
        OpenAIClient("http://models.internal:8000/v1")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost (openssl), as (cert file, key file)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("through_proxy", [False, True])
async def test_https_verifies_the_certificate_directly_or_through_a_connect_tunnel(certificate, monkeypatch, through_proxy):
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    seen: list[str] = []
    proxy = await forwarding_proxy(seen) if through_proxy else None
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    if proxy is not None:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
    async with raw_server(answering(reply()), ssl_context=server_tls) as (base_url, state):
        with pytest.raises(errors.ModelConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await chat(base_url)  # not trusted yet
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        response = await chat(base_url, max_retries=1)
    if proxy is not None:
        proxy.close()
        assert seen and all(head.startswith("CONNECT localhost:") for head in seen)
    assert response.message["content"] == "4"


def test_connections_parse_the_url_once():
    pool = Connections("http://127.0.0.1:8000/v1/chat/completions", {"Authorization": "Bearer k"}, 4)
    assert pool.target.port == 8000
    assert b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nAuthorization: Bearer k\r\n" in pool._head
