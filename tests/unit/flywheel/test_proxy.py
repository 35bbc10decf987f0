"""`lmgym proxy` end to end: the real `openai` SDK -> the proxy -> a scripted upstream, all on loopback.

`ScriptedApp` (lmgym.testing) answers chat requests and injects faults; it has no
`/v1/completions` and cannot hold a stream half-sent, so `Upstream` below adds those
around it (with streams of its own, split into other pieces than ScriptedApp's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import openai
import orjson
import pytest
from records import read_traces
from typer.testing import CliRunner

from lmgym.cli import app as cli_app
from lmgym.embedded import free_port
from lmgym.flywheel.proxy import ProxyApp, StreamAssembler, TraceWriter, _http, summarise_response  # httpx2 or httpx, as the SDK uses
from lmgym.testing import BackgroundServer, Fault, ScriptedApp, last_user_text, tool_call

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
TOKEN = "proxy-token-abcdef123456"
WEATHER_CALL = tool_call("get_weather", {"city": "Paris", "unit": "celsius"}, call_id="call_7")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def reply(request) -> str | dict:
    text = last_user_text(request) if "messages" in request else str(request.get("prompt"))
    if "weather" in text:
        return {"content": None, "tool_calls": [WEATHER_CALL]}
    return f"Hello from upstream, you said: {text}"


class Upstream:
    """`ScriptedApp` plus SSE streams (split into word chunks, tool-call arguments in two
    pieces, usage only on `stream_options.include_usage`) and `/v1/completions`.

    `gate`: when given, a stream stops after its first chunk until the event is set.
    `echo_key_next`: the next request gets a 401 whose message quotes the key it received.
    """

    def __init__(self):
        self.scripted = ScriptedApp(reply, api_key=UPSTREAM_KEY)
        self.bodies: list[bytes] = []
        self.headers: list[dict[bytes, bytes]] = []
        self.gate: threading.Event | None = None
        self.gate_opened: bool | None = None
        self.echo_key_next = False

    @property
    def requests(self) -> list[dict]:
        return [orjson.loads(b) for b in self.bodies if b]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        self.bodies.append(body)
        headers = dict(scope["headers"])
        self.headers.append(headers)
        request = orjson.loads(body) if body else {}
        if self.echo_key_next:
            self.echo_key_next = False
            message = f"Incorrect API key provided: {headers.get(b'authorization', b'').decode()}"
            await _send(send, 401, orjson.dumps({"error": {"message": message}}), "application/json")
        elif headers.get(b"authorization") != f"Bearer {UPSTREAM_KEY}".encode() or self.scripted.faults:
            await self.scripted(scope, _replay(body), send)  # 401 for a wrong key, or the next fault
        elif request.get("stream"):
            await self._stream(scope["path"], request, send)
        elif scope["path"] == "/v1/completions":
            text = reply(request)
            payload = {"id": "cmpl-1", "object": "text_completion", "model": request["model"],
                       "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": len(text.split()), "total_tokens": 1 + len(text.split())}}
            await _send(send, 200, orjson.dumps(payload), "application/json")
        else:
            await self.scripted(scope, _replay(body), send)

    async def _stream(self, path: str, request: dict, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        answer = reply(request)
        chat = path == "/v1/chat/completions"
        base = {"id": "chunk-1", "object": "chat.completion.chunk" if chat else "text_completion", "model": request["model"]}
        if not chat:
            events = [{"index": 0, "text": piece, "finish_reason": None} for piece in re.findall(r"\S+\s*", answer)]
            events.append({"index": 0, "text": "", "finish_reason": "stop"})
        elif isinstance(answer, str):
            events = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            events += [{"index": 0, "delta": {"content": piece}, "finish_reason": None} for piece in re.findall(r"\S+\s*", answer)]
            events.append({"index": 0, "delta": {}, "finish_reason": "stop"})
        else:
            events = [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]
            for i, call in enumerate(answer["tool_calls"]):
                arguments = call["function"]["arguments"]
                events.append({"index": 0, "delta": {"tool_calls": [{"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]}, "finish_reason": None})
                for piece in (arguments[:9], arguments[9:]):
                    events.append({"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, "finish_reason": None})
            events.append({"index": 0, "delta": {}, "finish_reason": "tool_calls"})
        chunks = [{**base, "choices": [choice]} for choice in events]
        if (request.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(chunks), "total_tokens": 3 + len(chunks)}})
        for n, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(chunk) + b"\n\n", "more_body": True})
            if n == 0 and self.gate is not None:
                deadline = time.monotonic() + 5
                while not self.gate.is_set() and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                self.gate_opened = self.gate.is_set()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _replay(body: bytes):
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


async def _send(send, status: int, body: bytes, content_type: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type.encode())]})
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def serve(app, lifespan: str = "off"):
    """Serve an ASGI app on a free loopback port, without server/date headers; yields its root URL."""
    with BackgroundServer(app, lifespan=lifespan, server_header=False, date_header=False) as server:
        yield server.url


# One upstream and one proxy serve the whole module: stopping a uvicorn server takes about
# 0.2 s, two per test otherwise. Each test gets them with a clean slate and the proxy
# writing to the test's own `traces` folder; no test leaves a request behind.
@pytest.fixture(scope="module")
def shared_upstream():
    app = Upstream()
    with serve(app) as url:
        app.url = url
        yield app


@pytest.fixture
def upstream(shared_upstream):
    app = shared_upstream
    app.bodies.clear()
    app.headers.clear()
    app.gate = app.gate_opened = None
    app.echo_key_next = False
    app.scripted.faults.clear()
    app.scripted.requests.clear()
    return app


@pytest.fixture(scope="module")
def shared_proxy(shared_upstream, tmp_path_factory):
    writer = TraceWriter(tmp_path_factory.mktemp("traces"), secrets=[UPSTREAM_KEY])
    app = ProxyApp(shared_upstream.url + "/v1", writer, token=TOKEN, upstream_key=UPSTREAM_KEY)
    with serve(app, lifespan="on") as url:
        yield app, url + "/v1"


@pytest.fixture
def proxy_url(shared_proxy, upstream, traces):
    """The module's proxy, recording this test's exchanges in `traces`."""
    app, url = shared_proxy
    app.writer = TraceWriter(traces, secrets=[UPSTREAM_KEY])
    yield url
    app.writer.close()


@pytest.fixture
def client(proxy_url):
    with openai.OpenAI(base_url=proxy_url, api_key=TOKEN, max_retries=0, timeout=20) as sdk:
        yield sdk


def test_chat_is_forwarded_and_recorded(client, upstream, traces):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    response = client.chat.completions.create(
        model="gpt-test", messages=messages, temperature=0.2, max_tokens=50,
        extra_body={"top_k": 5}, extra_headers={"X-Session-Id": "sess-42"},
    )
    assert response.choices[0].message.content == "Hello from upstream, you said: Say hi"
    assert upstream.requests == [{"model": "gpt-test", "messages": messages, "temperature": 0.2, "max_tokens": 50, "top_k": 5}]
    [record] = read_traces(traces)
    assert re.fullmatch(r"[0-9a-f]{32}", record["id"])
    assert record["session_id"] == "sess-42" and record["endpoint"] == "/v1/chat/completions"
    assert record["stream"] is False and record["status"] == 200 and record["error"] is None
    assert record["request"] == {"model": "gpt-test", "messages": messages, "tools": None,
                                 "sampling": {"temperature": 0.2, "max_tokens": 50, "top_k": 5}}
    assert record["response"] == {"model": "gpt-test", "content": "Hello from upstream, you said: Say hi",
                                  "reasoning_content": None, "tool_calls": None, "finish_reason": "stop"}
    assert record["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}  # total 0 upstream: summed
    assert record["started_at"] <= record["finished_at"] <= time.time()
    assert 0 < record["latency_s"] < 10


def test_body_goes_upstream_byte_for_byte_with_only_the_key_replaced(proxy_url, upstream, traces):
    body = b'{"model":"m",  "messages":[{"role":"user","content":"caf\\u00e9"}], "seed": 7}'
    response = _http.post(
        proxy_url + "/chat/completions", content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json", "X-Trace-Me": "yes"},
    )
    assert response.status_code == 200, response.text
    assert upstream.bodies == [body]
    headers = upstream.headers[0]
    assert headers[b"authorization"] == f"Bearer {UPSTREAM_KEY}".encode()
    assert headers[b"x-trace-me"] == b"yes"
    assert not any(TOKEN.encode() in value for value in headers.values())
    [record] = read_traces(traces)
    assert record["request"]["messages"] == [{"role": "user", "content": "café"}]
    assert record["request"]["sampling"] == {"seed": 7} and record["session_id"] is None


def test_tool_calls(client, traces):
    response = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "weather in Paris?"}], tools=TOOLS, tool_choice="auto",
    )
    call = response.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name) == ("call_7", "get_weather")
    assert orjson.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    [record] = read_traces(traces)
    assert record["request"]["tools"] == TOOLS and record["request"]["sampling"] == {"tool_choice": "auto"}
    assert record["response"]["tool_calls"] == [WEATHER_CALL]
    assert record["response"]["finish_reason"] == "tool_calls" and record["response"]["content"] is None


def test_streaming_text_with_and_without_usage(client, upstream, traces):
    messages = [{"role": "user", "content": "stream please"}]
    stream = client.chat.completions.create(model="m", messages=messages, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from upstream, you said: stream please"
    assert chunks[-1].usage.prompt_tokens == 3
    list(client.chat.completions.create(model="m", messages=messages, stream=True, temperature=0))
    assert upstream.requests[0]["stream_options"] == {"include_usage": True}
    assert "stream_options" not in upstream.requests[1]  # nothing added to the client's request
    with_usage, without = read_traces(traces)
    assert with_usage["stream"] is True and with_usage["status"] == 200 and with_usage["error"] is None
    assert with_usage["response"] == {"model": "m", "content": text, "reasoning_content": None, "tool_calls": None, "finish_reason": "stop"}
    assert with_usage["usage"] == {"prompt_tokens": 3, "completion_tokens": chunks[-1].usage.completion_tokens,
                                   "total_tokens": chunks[-1].usage.total_tokens}
    assert with_usage["request"]["sampling"] == {}
    assert without["usage"] is None and without["response"]["content"] == text
    assert without["request"]["sampling"] == {"temperature": 0}


def test_streaming_tool_calls(client, traces):
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "weather?"}], tools=TOOLS, stream=True,
    )
    arguments = "".join(
        call.function.arguments or "" for chunk in stream for call in (chunk.choices[0].delta.tool_calls or [])
    )
    assert orjson.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    [record] = read_traces(traces)
    assert record["response"]["tool_calls"] == [WEATHER_CALL]
    assert record["response"]["finish_reason"] == "tool_calls" and record["response"]["content"] is None


def test_stream_chunks_reach_the_client_as_they_arrive(client, upstream, traces):
    upstream.gate = threading.Event()  # the upstream holds the rest until we saw the first chunk
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "one two three"}], stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    upstream.gate.set()
    rest = "".join(c.choices[0].delta.content or "" for c in stream)
    assert upstream.gate_opened is True  # not released by its timeout: the proxy did not buffer
    assert rest.endswith("one two three")
    assert read_traces(traces)[0]["response"]["content"] == rest


def test_client_hanging_up_mid_stream_is_recorded(proxy_url, upstream, traces):
    upstream.gate = threading.Event()
    body = {"model": "m", "messages": [{"role": "user", "content": "a long answer"}], "stream": True}
    with _http.stream("POST", proxy_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        next(response.iter_bytes())
    time.sleep(0.3)  # let the proxy see the hang-up before the upstream goes on
    upstream.gate.set()
    deadline = time.monotonic() + 10
    while not read_traces(traces):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [record] = read_traces(traces)
    assert record["error"]["status"] == 499 and "disconnected" in record["error"]["body"]
    assert record["status"] == 200 and record["response"]["finish_reason"] is None


def test_completions_endpoint(client, traces):
    response = client.completions.create(model="base", prompt="Once upon", max_tokens=5)
    assert response.choices[0].text == "Hello from upstream, you said: Once upon"
    streamed = "".join(c.choices[0].text for c in client.completions.create(model="base", prompt="Once upon", stream=True))
    assert streamed == response.choices[0].text
    plain, stream = read_traces(traces)
    assert plain["endpoint"] == stream["endpoint"] == "/v1/completions"
    assert plain["request"] == {"model": "base", "prompt": "Once upon", "tools": None, "sampling": {"max_tokens": 5}}
    assert plain["response"] == {"model": "base", "content": streamed, "reasoning_content": None, "tool_calls": None, "finish_reason": "stop"}
    assert plain["usage"]["completion_tokens"] == 7
    assert stream["stream"] is True and stream["response"]["content"] == streamed


def test_models_are_forwarded_but_not_recorded(client, traces):
    assert [m.id for m in client.models.list()] == ["scripted"]
    assert read_traces(traces) == []


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [500, 429])
def test_upstream_errors_pass_through_and_are_recorded(client, upstream, traces, status, stream):
    upstream.scripted.faults.append(Fault(status=status, retry_after=7 if status == 429 else None))
    error = openai.RateLimitError if status == 429 else openai.InternalServerError
    with pytest.raises(error) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=stream)
    assert info.value.status_code == status
    assert info.value.body == {"message": f"injected HTTP {status}"}
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"
    [record] = read_traces(traces)
    assert record["status"] == status and record["stream"] is stream
    assert record["response"] is None and record["usage"] is None
    assert record["error"] == {"status": status, "body": {"error": {"message": f"injected HTTP {status}"}}}


def test_unauthenticated_requests_are_refused_and_not_forwarded(proxy_url, upstream, traces):
    for key in ("wrong-token", TOKEN + "x", TOKEN[:-1]):
        with openai.OpenAI(base_url=proxy_url, api_key=key, max_retries=0) as sdk:
            with pytest.raises(openai.AuthenticationError) as info:
                sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            assert info.value.status_code == 401
            with pytest.raises(openai.AuthenticationError):
                sdk.models.list()
    assert _http.post(proxy_url + "/chat/completions", json={"model": "m"}).status_code == 401
    assert _http.post(proxy_url + "/chat/completions", json={"model": "m"}, headers={"Authorization": TOKEN}).status_code == 401
    assert upstream.bodies == [] and read_traces(traces) == []


def test_upstream_key_never_reaches_traces_logs_or_clients(client, upstream, traces, caplog):
    caplog.set_level(logging.DEBUG)
    upstream.echo_key_next = True  # an upstream that quotes the key back in its error
    with pytest.raises(openai.AuthenticationError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body == {"message": "Incorrect API key provided: Bearer ***"}
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"my key is {UPSTREAM_KEY}"}])
    list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
    records = read_traces(traces)
    assert len(records) == 3 and records[0]["error"]["body"]["error"]["message"].endswith("Bearer ***")
    for path in traces.iterdir():
        assert UPSTREAM_KEY not in path.read_text() and TOKEN not in path.read_text()
    assert UPSTREAM_KEY not in caplog.text and TOKEN not in caplog.text


def test_unreachable_upstream_is_a_recorded_502(traces):
    app = ProxyApp(f"http://127.0.0.1:{free_port()}/v1", TraceWriter(traces), token=TOKEN, upstream_key=UPSTREAM_KEY)
    with serve(app, lifespan="on") as url, openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as info:
            sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 502 and "cannot reach the upstream" in str(info.value)
    [record] = read_traces(traces)
    assert record["status"] == 502 and record["error"]["status"] == 502


def test_a_connection_dropped_before_any_response_is_retried_once(traces):
    """The keep-alive race: the upstream closes a pooled connection just as it is reused."""
    body = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "second try"}, "finish_reason": "stop"}]}'
    listener = socket.create_server(("127.0.0.1", 0))
    connections: list[bytes] = []

    def upstream() -> None:
        for answer in (False, True):
            conn, _ = listener.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
                while len(rest) < length:
                    rest += conn.recv(65536)
                connections.append(rest)
                if answer:  # the first connection is closed without a word
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=upstream, daemon=True)
    thread.start()
    app = ProxyApp(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", TraceWriter(traces), token=TOKEN)
    with serve(app, lifespan="on") as url, openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0) as sdk:
        response = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    thread.join(timeout=5)
    listener.close()
    assert response.choices[0].message.content == "second try"
    assert len(connections) == 2 and connections[0] == connections[1]
    [record] = read_traces(traces)
    assert record["status"] == 200 and record["response"]["content"] == "second try"


def test_upstream_timeout_is_a_recorded_504(upstream, traces):
    upstream.scripted.faults.append(Fault(stall_s=1.0))
    app = ProxyApp(upstream.url + "/v1", TraceWriter(traces), token=TOKEN, upstream_key=UPSTREAM_KEY, timeout=0.3)
    with serve(app, lifespan="on") as url, openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as info:
            sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 504
    [record] = read_traces(traces)
    assert record["status"] == 504 and record["error"]["body"]["error"]["code"] == "upstream_timeout"


async def test_concurrent_exchanges_are_recorded_once_each(proxy_url, traces):
    sdk = openai.AsyncOpenAI(base_url=proxy_url, api_key=TOKEN, max_retries=0)

    async def one(i: int) -> str:
        messages = [{"role": "user", "content": f"marker-{i:03d}"}]
        if i % 2:
            stream = await sdk.chat.completions.create(model="m", messages=messages, stream=True)
            return "".join([c.choices[0].delta.content or "" async for c in stream])
        return (await sdk.chat.completions.create(model="m", messages=messages)).choices[0].message.content

    answers = await asyncio.gather(*(one(i) for i in range(60)))
    await sdk.close()
    assert all(answer.endswith(f"marker-{i:03d}") for i, answer in enumerate(answers))
    records = read_traces(traces)
    markers = sorted(r["request"]["messages"][0]["content"] for r in records)
    assert markers == [f"marker-{i:03d}" for i in range(60)]
    assert len({r["id"] for r in records}) == 60
    assert all(r["response"]["content"].endswith(r["request"]["messages"][0]["content"]) for r in records)


async def test_light_traffic_stays_on_one_pool_and_load_spreads(upstream, traces):
    app = ProxyApp(upstream.url + "/v1", TraceWriter(traces), token=None, upstream_key=UPSTREAM_KEY)
    with serve(app, lifespan="on") as url:
        sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)

        def ask():
            return sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])

        for _ in range(3):
            await ask()
        assert sum(c is not None for c in app._pool._clients) == 1  # its warm connection is reused
        await asyncio.gather(*(ask() for _ in range(12)))
        assert sum(c is not None for c in app._pool._clients) > 1
        await sdk.close()
    assert len(read_traces(traces)) == 15


def test_trace_files_rotate_by_size_and_are_continued(tmp_path):
    writer = TraceWriter(tmp_path, rotate_bytes=200, secrets=["short", UPSTREAM_KEY])
    for i in range(10):
        writer.write({"i": i, "pad": "x" * 50, "short": "short", "key": UPSTREAM_KEY})
    writer.close()
    files = sorted(tmp_path.glob("traces-*.jsonl"))
    assert [f.name for f in files] == [f"traces-{n:05d}.jsonl" for n in range(1, 6)]
    assert all(f.stat().st_size <= 200 for f in files)
    assert [r["i"] for r in read_traces(tmp_path)] == list(range(10))
    assert read_traces(tmp_path)[0]["short"] == "short" and read_traces(tmp_path)[0]["key"] == "***"
    with files[-1].open("ab") as f:
        f.write(b'{"i": 10, "torn')  # a crash in the middle of a line
    writer = TraceWriter(tmp_path, rotate_bytes=10_000)
    writer.write({"i": 11})
    writer.close()
    lines = files[-1].read_bytes().splitlines()
    assert len(list(tmp_path.iterdir())) == 5 and lines[-2] == b'{"i": 10, "torn' and orjson.loads(lines[-1]) == {"i": 11}


def test_stream_assembler_handles_split_events_and_errors():
    assembler = StreamAssembler("/chat/completions")
    raw = (b'data: {"model":"m","choices":[{"index":0,"delta":{"content":"He"}}]}\r\n\r\n'
           b'data: {"choices":[{"index":1,"delta":{"content":"ignored"}},{"index":0,"delta":{"content":"llo"},"finish_reason":"length"}]}\n\n'
           b'data: {"choices":[{"index":0,"delta":{"tool_calls":["odd"]}}],"usage":{"prompt_tokens":"x"}}\n\n'
           b'data: not json\n\ndata: {"error":{"message":"overloaded"}}\n\ndata: [DONE]')
    for i in range(0, len(raw), 7):  # network chunks cut lines anywhere
        assembler.feed(raw[i:i + 7])
    response, usage = assembler.result()
    assert response == {"model": "m", "content": "Hello", "reasoning_content": None, "tool_calls": None, "finish_reason": "length"}
    assert usage == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert assembler.error == {"error": {"message": "overloaded"}} and assembler.done


@pytest.mark.parametrize("body", [[], "text", {"choices": {"0": 1}}, {"choices": ["x"]}, {"choices": [{"message": "x"}]}])
def test_odd_response_bodies_do_not_break_the_summary(body):
    response, usage = summarise_response("/chat/completions", body)
    assert usage is None and (response is None or response["content"] is None)


runner = CliRunner()


def test_help_explains_the_command():
    result = runner.invoke(cli_app, ["proxy", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("--upstream", "--out", "--token", "LMGYM_PROXY_TOKEN", "--no-auth", "--upstream-key-var", "--rotate-mb", "base_url"):
        assert text in result.output


def test_refuses_to_start_without_a_token(tmp_path):
    env = {"LMGYM_PROXY_TOKEN": None, "COLUMNS": "200"}
    result = runner.invoke(cli_app, ["proxy", "--upstream", "http://127.0.0.1:1/v1", "--out", str(tmp_path)], env=env)
    assert result.exit_code == 2 and "LMGYM_PROXY_TOKEN" in result.output and "--no-auth" in result.output
    result = runner.invoke(cli_app, ["proxy", "--upstream", "localhost:1", "--out", str(tmp_path), "--no-auth"], env=env)
    assert result.exit_code == 2 and "http://" in result.output


@pytest.mark.parametrize("no_auth", [False, True])
def test_cli_serves_records_and_stops_cleanly(upstream, tmp_path, no_auth):
    port, out = free_port(), tmp_path / "traces"
    env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, "COLUMNS": "200", "LMGYM_LOG_LEVEL": "DEBUG"}
    env.pop("LMGYM_PROXY_TOKEN", None)
    args = ["--no-auth"] if no_auth else []
    if not no_auth:
        env["LMGYM_PROXY_TOKEN"] = TOKEN
    process = subprocess.Popen(
        [sys.executable, "-m", "lmgym", "proxy", "--upstream", upstream.url + "/v1", "--port", str(port), "--out", str(out), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        sdk = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="anything" if no_auth else TOKEN, max_retries=0, timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                sdk.models.list()
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        reply_text = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
        assert reply_text == "Hello from upstream, you said: hi"
    finally:
        process.send_signal(signal.SIGTERM if no_auth else signal.SIGINT)  # both stop it gracefully
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert f"traces: {out / 'traces-00001.jsonl'}" in stderr
    assert f"OPENAI_BASE_URL=http://127.0.0.1:{port}/v1" in stderr and "X-Session-Id" in stderr
    assert "stopped: 1 exchange(s) recorded" in stderr
    assert ("--no-auth: anyone" in stderr) is no_auth
    assert UPSTREAM_KEY not in stdout + stderr and TOKEN not in stdout + stderr
    assert len(read_traces(out)) == 1 and UPSTREAM_KEY not in (out / "traces-00001.jsonl").read_text()
