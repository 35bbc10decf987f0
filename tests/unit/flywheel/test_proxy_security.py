"""`lmgym proxy` under attack: paths that try to reach other upstream routes with the
upstream key, oversized, slow and abandoned uploads, an upstream that echoes the key,
credential headers of the client, and an upstream that trickles its answer.

Everything runs on loopback against a real upstream (`RecordingUpstream`) that records
each request it receives and answers 200 to any path, so a request that should not have
been forwarded shows up in its record. Attacks are sent over raw sockets: HTTP clients
normalise paths before sending, attackers do not.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import openai
import orjson
import pytest
from records import read_traces
from typer.testing import CliRunner

from lmgym.cli import app as cli_app
from lmgym.embedded import free_port
from lmgym.errors import UsageError
from lmgym.flywheel.proxy import ProxyApp, TraceWriter, _http, forwardable_header_names, http_protocol, split_after_last_event
from lmgym.testing import BackgroundServer

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
TOKEN = "proxy-token-abcdef123456"
CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


@dataclass
class Seen:
    method: str
    raw_path: bytes
    query: bytes
    headers: dict[bytes, bytes]
    body: bytes


class RecordingUpstream:
    """Records every request and answers 200 to any path (a chat completion, or SSE when
    the request streams). `echo_key`: the authorization it got goes back in a response
    header and, cut in two across network chunks, in the streamed text. `trickle_s`: the
    answer comes one byte every `trickle_s` seconds (for at most 6 s)."""

    def __init__(self):
        self.seen: list[Seen] = []
        self.echo_key = False
        self.trickle_s: float | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = dict(scope["headers"])
        self.seen.append(Seen(scope["method"], scope.get("raw_path") or scope["path"].encode(), scope["query_string"], headers, body))
        request = orjson.loads(body) if body.startswith(b"{") else {}
        auth = headers.get(b"authorization", b"")
        echo = [(b"x-echo-authorization", auth)] if self.echo_key else []
        if request.get("stream"):
            text = f"your key is {auth.decode()}" if self.echo_key else "streamed hello"
            event = _sse({"choices": [{"index": 0, "delta": {"content": text}}]})
            cut = event.find(b"Bearer ") + 16 if self.echo_key else len(event) // 2
            chunks = [event[:cut], event[cut:], b"data: [DONE]\n\n"]  # one event in two network chunks
            await self._answer(send, b"text/event-stream", echo, chunks, receive)
        else:
            payload = {"object": "chat.completion", "model": "m", "path": scope["path"],
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}]}
            await self._answer(send, b"application/json", echo, [orjson.dumps(payload)], receive)

    async def _answer(self, send, content_type: bytes, headers, chunks: list[bytes], receive) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type), *headers]})
        if self.trickle_s is not None:
            gone = asyncio.ensure_future(receive())
            data, deadline = b"".join(chunks), time.monotonic() + 6
            chunks = []
            for byte in (data[i:i + 1] for i in range(len(data))):
                if gone.done() or time.monotonic() > deadline:
                    break
                await send({"type": "http.response.body", "body": byte, "more_body": True})
                await asyncio.sleep(self.trickle_s)
            gone.cancel()
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.01)  # separate network chunks
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _sse(event: dict) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


def raw_exchange(port: int, data: bytes | list[bytes], pause_s: float = 0.0, timeout: float = 5.0) -> bytes:
    """Sends `data` (pieces `pause_s` apart) on a new connection; returns all it got back
    until the proxy closed the connection. Stops sending once the proxy has closed it."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for piece in [data] if isinstance(data, bytes) else data:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(pause_s)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


def status_of(response: bytes) -> int | None:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None


def request_bytes(method: str, target: str, body: bytes = b"", headers: str = "") -> bytes:
    head = (f"{method} {target} HTTP/1.1\r\nHost: proxy\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n{headers}\r\n")
    return head.encode() + body


# One upstream and one proxy (default options) serve the whole module: stopping a uvicorn
# server takes about 0.2 s, two per test otherwise. Each test gets them with a clean record
# and the proxy writing to the test's own `traces` folder; no test leaves a request behind.
@pytest.fixture(scope="module")
def shared_upstream():
    app = RecordingUpstream()
    with BackgroundServer(app) as server:
        app.url = server.url
        yield app


@pytest.fixture
def upstream(shared_upstream):
    shared_upstream.seen.clear()
    shared_upstream.echo_key, shared_upstream.trickle_s = False, None
    return shared_upstream


def serve_proxy(upstream, traces, **options) -> BackgroundServer:
    app = ProxyApp(upstream.url + "/v1", TraceWriter(traces, secrets=[UPSTREAM_KEY]), token=TOKEN, upstream_key=UPSTREAM_KEY, **options)
    return BackgroundServer(app, lifespan="on", http=http_protocol(options.get("client_timeout", 60.0)))


@pytest.fixture(scope="module")
def shared_proxy(shared_upstream, tmp_path_factory):
    with serve_proxy(shared_upstream, tmp_path_factory.mktemp("traces")) as server:
        yield server


@pytest.fixture
def proxy(shared_proxy, upstream, traces):
    """The module's proxy, recording this test's exchanges in `traces`."""
    shared_proxy.app.writer = TraceWriter(traces, secrets=[UPSTREAM_KEY])
    yield shared_proxy
    shared_proxy.app.writer.close()


ATTACKS = [
    ("GET", "/v1/models/%2e%2e/files"),
    ("GET", "/v1/models/%2E%2E/%2E%2E/organization/admin_api_keys"),
    ("GET", "/v1/models/../../organization/admin_api_keys"),
    ("GET", "/v1/models/..%2F..%2Forganization%2Fadmin_api_keys"),
    ("GET", "/v1/models/%252e%252e/files"),
    ("GET", "/v1/models/./files"),
    ("GET", "/v1/models/."),
    ("GET", "/v1/models/"),
    ("GET", "/v1/models/gpt%3Fafter=x"),
    ("GET", "/v1/models/gpt%23fragment"),
    ("GET", "/v1/models/gpt%0d%0aX-Injected:%20yes"),
    ("GET", "/v1/models/gpt%00"),
    ("GET", "/v1/models/a/b"),
    ("GET", "/v1//models"),
    ("GET", "/v1/files"),
    ("GET", "/chat/completions"),
    ("DELETE", "/v1/models/gpt-4o"),
    ("POST", "/v1/models/gpt-4o"),
    ("POST", "/v1/chat/completions/../../files"),
    ("POST", "/v1/chat/completions/%2e%2e/%2e%2e/files"),
    ("POST", "/v1/chat/completions/"),
    ("POST", "/v1/fine_tuning/jobs"),
]


@pytest.mark.parametrize(("method", "target"), ATTACKS)
def test_paths_off_the_allow_list_are_404_and_never_forwarded(proxy, upstream, traces, method, target):
    response = raw_exchange(proxy.port, request_bytes(method, target, CHAT if method == "POST" else b""))
    assert status_of(response) == 404, response
    assert b'"code":"not_found"' in response and b"Traceback" not in response
    assert upstream.seen == [] and read_traces(traces) == []


@pytest.mark.parametrize(("method", "target"), [("GET", "/v1/models?after=x"), ("POST", "/v1/chat/completions?api-version=1")])
def test_query_strings_are_refused_not_forwarded(proxy, upstream, traces, method, target):
    response = raw_exchange(proxy.port, request_bytes(method, target, CHAT if method == "POST" else b""))
    assert status_of(response) == 400 and b"query strings" in response
    assert upstream.seen == [] and read_traces(traces) == []


def test_allowed_routes_reach_exactly_their_upstream_path(proxy, upstream, traces):
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key=TOKEN, max_retries=0, timeout=10) as sdk:
        for model in ("gpt-4o-mini", "ft:gpt-4o:my-org:custom:id-9", "llama3.1:8b", "Qwen2.5-7B-Instruct"):
            sdk.models.retrieve(model)
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        sdk.completions.create(model="m", prompt="hi")
        sdk.models.list()
    assert [(s.method, s.raw_path, s.query) for s in upstream.seen] == [
        ("GET", b"/v1/models/gpt-4o-mini", b""), ("GET", b"/v1/models/ft:gpt-4o:my-org:custom:id-9", b""),
        ("GET", b"/v1/models/llama3.1:8b", b""), ("GET", b"/v1/models/Qwen2.5-7B-Instruct", b""),
        ("POST", b"/v1/chat/completions", b""), ("POST", b"/v1/completions", b""), ("GET", b"/v1/models", b""),
    ]
    assert [r["endpoint"] for r in read_traces(traces)] == ["/v1/chat/completions", "/v1/completions"]


def test_body_over_the_limit_is_413_before_it_is_read(upstream, traces):
    with serve_proxy(upstream, traces, max_body_bytes=1000) as proxy:
        head = request_bytes("POST", "/v1/chat/completions").replace(b"Content-Length: 0", b"Content-Length: 104857600")
        declared = raw_exchange(proxy.port, [head, b"x" * 1000], timeout=5)  # 100 MB announced, 1 KB sent
        chunked_head = head.replace(b"Content-Length: 104857600", b"Transfer-Encoding: chunked")
        chunk = b"200\r\n" + b"x" * 512 + b"\r\n"  # 512 bytes, twice: over the limit with no Content-Length
        chunked = raw_exchange(proxy.port, [chunked_head, chunk, chunk, b"0\r\n\r\n"])
        just_fits = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 900}]}).ljust(1000)
        fits = raw_exchange(proxy.port, request_bytes("POST", "/v1/chat/completions", just_fits))
    assert status_of(declared) == 413 and b"request_too_large" in declared
    assert status_of(chunked) == 413
    assert status_of(fits) == 200
    assert [s.body for s in upstream.seen] == [just_fits]
    assert len(read_traces(traces)) == 1


def test_slow_body_is_408_and_not_forwarded(upstream, traces):
    with serve_proxy(upstream, traces, client_timeout=0.3) as proxy:
        head = request_bytes("POST", "/v1/chat/completions", CHAT)[:-len(CHAT)]
        started = time.monotonic()
        response = raw_exchange(proxy.port, [head, *(CHAT[i:i + 1] for i in range(len(CHAT)))], pause_s=0.1)
        elapsed = time.monotonic() - started
    assert status_of(response) == 408 and b"request_timeout" in response
    assert elapsed < len(CHAT) * 0.1  # cut off, not waited out
    assert upstream.seen == [] and read_traces(traces) == []


def test_slow_headers_are_cut_off_and_normal_keep_alive_still_works(upstream, traces):
    with serve_proxy(upstream, traces, client_timeout=0.3) as proxy:
        head = request_bytes("POST", "/v1/chat/completions", CHAT)
        started = time.monotonic()
        response = raw_exchange(proxy.port, [head[i:i + 1] for i in range(60)], pause_s=0.05)  # 3 s of headers
        cut_after = time.monotonic() - started
        idle = raw_exchange(proxy.port, [b"", b""], pause_s=0.0)  # connects, sends nothing
        with _http.Client(base_url=proxy.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            first = http.post("/v1/chat/completions", content=CHAT)
            time.sleep(0.5)  # longer than the header deadline, idle between requests on one connection
            second = http.post("/v1/chat/completions", content=CHAT)
    assert response == b"" and cut_after < 2.0
    assert idle == b""
    assert first.status_code == second.status_code == 200
    assert len(upstream.seen) == 2 and len(read_traces(traces)) == 2


def test_client_that_hangs_up_mid_upload_is_not_forwarded(proxy, upstream, traces):
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]})
    head = request_bytes("POST", "/v1/chat/completions", body)[:-len(body)]
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head + body[:1000])
        time.sleep(0.2)
    time.sleep(0.5)  # time for the proxy to have forwarded it, were it going to
    assert raw_exchange(proxy.port, request_bytes("POST", "/v1/chat/completions", CHAT)).startswith(b"HTTP/1.1 200")
    assert [s.body for s in upstream.seen] == [CHAT]
    assert [r["request"]["messages"][0]["content"] for r in read_traces(traces)] == ["hi"]


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_key_echoed_in_headers_or_stream_is_scrubbed(proxy, upstream, traces, stream):
    upstream.echo_key = True
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = _http.post(proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert UPSTREAM_KEY[:10] not in response.text and UPSTREAM_KEY[-10:] not in response.text
    if stream:
        assert "your key is Bearer ***" in response.text and response.text.endswith("data: [DONE]\n\n")
    assert response.headers["x-echo-authorization"] == "Bearer ***"
    assert UPSTREAM_KEY not in "".join(p.read_text() for p in traces.iterdir())


def test_streams_are_relayed_in_whole_events():
    stream = b'data: {"a":1}\n\ndata: {"b":2}\r\n\r\ndata: {"c"'
    assert split_after_last_event(stream) == (stream[:-10], b'data: {"c"')
    assert split_after_last_event(b"data: x\n") == (b"", b"data: x\n")
    assert split_after_last_event(b"data: x\n\n") == (b"data: x\n\n", b"")
    assert split_after_last_event(b"") == (b"", b"")


def test_credential_and_hop_by_hop_headers_of_the_client_stay_here(upstream, traces):
    sent = ("Cookie: session=abc\r\nOpenAI-Organization: org-victim\r\nOpenAI-Project: proj_1\r\nX-Api-Key: k1\r\n"
            "Api-Key: k2\r\nProxy-Authorization: Basic eg==\r\nX-Auth-Token: t\r\nKeep-Alive: timeout=5\r\n"
            "X-Hop: 1\r\nTE: trailers\r\nX-Trace-Me: yes\r\nX-Session-Id: s1\r\n")
    for forward in ((), ["OpenAI-Organization", "cookie"]):
        with serve_proxy(upstream, traces, forward_headers=forward) as proxy:
            request = request_bytes("POST", "/v1/chat/completions", CHAT, headers=sent)
            response = raw_exchange(proxy.port, request.replace(b"Connection: close", b"Connection: close, X-Hop"))
            assert status_of(response) == 200
    default, configured = (set(s.headers) for s in upstream.seen)
    assert {b"x-trace-me", b"x-session-id", b"content-type"} <= default
    dropped = {b"cookie", b"openai-organization", b"openai-project", b"x-api-key", b"api-key", b"proxy-authorization",
               b"x-auth-token", b"keep-alive", b"x-hop", b"te"}
    assert not dropped & default
    assert b"x-hop" not in upstream.seen[0].headers.get(b"connection", b"").lower()  # httpx's own, not the client's
    assert dropped & configured == {b"openai-organization", b"cookie"}
    assert upstream.seen[1].headers[b"openai-organization"] == b"org-victim"
    assert all(s.headers[b"authorization"] == f"Bearer {UPSTREAM_KEY}".encode() for s in upstream.seen)


@pytest.mark.parametrize("name", ["Authorization", "Host", "Connection", "Content-Length", "bad name", "X-É"])
def test_headers_that_can_never_be_forwarded_are_refused_by_name(name):
    with pytest.raises(UsageError, match="--forward-header"):
        forwardable_header_names([name])


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_bounds_the_whole_answer_not_each_read(upstream, traces, stream):
    """An upstream that sends one byte every 0.25 s never trips a per-read timeout of 1 s."""
    upstream.trickle_s = 0.25
    with serve_proxy(upstream, traces, timeout=1.0) as proxy:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=TOKEN, max_retries=0, timeout=30) as sdk:
            started = time.monotonic()
            with pytest.raises(openai.APIError) as info:
                answer = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=stream)
                list(answer) if stream else None
            elapsed = time.monotonic() - started
    assert 0.95 < elapsed < 2.5
    assert "did not finish within 1s" in str(info.value)
    if not stream:
        assert info.value.status_code == 504
    [record] = read_traces(traces)
    assert record["error"]["status"] == 504 and record["stream"] is stream


runner = CliRunner()


def test_help_documents_the_limits():
    result = runner.invoke(cli_app, ["proxy", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for text in ("--max-body-mb", "--client-timeout", "--forward-header", "connecting to its last byte"):
        assert text in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--forward-header", "Authorization"], "--forward-header Authorization: this header is never forwarded"),
    (["--max-body-mb", "0"], "--max-body-mb must be positive"),
    (["--client-timeout", "-1"], "--client-timeout must be positive"),
    (["--timeout", "nan"], "--timeout must be positive"),
])
def test_cli_refuses_bad_limits_in_one_line(tmp_path, args, message):
    result = runner.invoke(cli_app, ["proxy", "-u", "http://127.0.0.1:1/v1", "-o", str(tmp_path / "t"), "--no-auth", *args],
                           env={"LMGYM_PROXY_TOKEN": None, "COLUMNS": "300"})
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t").exists()


def test_cli_applies_the_body_limit_and_client_timeout(upstream, tmp_path):
    port, out = free_port(), tmp_path / "traces"
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, "LMGYM_PROXY_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "lmgym", "proxy", "-u", upstream.url + "/v1", "-p", str(port), "-o", str(out),
         "--max-body-mb", "0.001", "--client-timeout", "0.5"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        too_large = raw_exchange(port, request_bytes("POST", "/v1/chat/completions", b"x" * 2000))
        started = time.monotonic()
        slow = raw_exchange(port, [b"POST /v1/chat/completions HTTP/1.1\r\n", *[b"X: y\r\n"] * 40], pause_s=0.1)
        cut_after = time.monotonic() - started
        fits = raw_exchange(port, request_bytes("POST", "/v1/chat/completions", CHAT))
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert status_of(too_large) == 413 and slow == b"" and cut_after < 3.5
    assert status_of(fits) == 200 and [s.body for s in upstream.seen] == [CHAT]
