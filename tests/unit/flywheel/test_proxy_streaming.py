"""Streamed replies: `ScriptedServer` streams like the real servers (text, tool calls in
OpenAI's and llama.cpp's chunkings, reasoning, usage), and `lmgym proxy` records a
streamed reply exactly as it records the same reply unstreamed."""

from __future__ import annotations

import openai
import pytest
from records import read_traces

from lmgym.flywheel.proxy import ProxyApp, TraceWriter
from lmgym.testing import BackgroundServer, ScriptedServer, last_user_text, tool_call

CALLS = [tool_call("add_item", {"name": "milk", "quantity": 2}, call_id="call_a"),
         tool_call("add_item", {"name": "bread"}, call_id="call_b")]
REASONING = "The user wants a greeting. Keep it short."


def reply(request) -> str | dict:
    text = last_user_text(request)
    if text == "tools":
        return {"content": None, "tool_calls": CALLS}
    if text == "think":
        return {"content": "Hello there.", "reasoning_content": REASONING}
    return f"You said: {text}"


def ask(sdk, text: str, **options):
    return sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": text}], **options)


# One scripted server per stream style, and one proxy in front of it, serve the module
# (stopping a uvicorn server takes about 0.2 s); each test gets them with a clean slate.
@pytest.fixture(scope="module", params=["openai", "llama.cpp"])
def shared_server(request):
    with ScriptedServer(reply, stream_style=request.param) as scripted:
        yield scripted


@pytest.fixture
def server(shared_server):
    shared_server.app.requests.clear()
    shared_server.app.faults.clear()
    return shared_server


@pytest.fixture
def sdk(server):
    with openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=10) as client:
        yield client


def test_scripted_server_streams_text_and_usage_only_when_asked(sdk):
    chunks = list(ask(sdk, "one two three", stream=True))
    assert len(chunks) > 4 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "You said: one two three"
    assert chunks[-1].choices[0].finish_reason == "stop" and all(c.usage is None for c in chunks)
    with_usage = list(ask(sdk, "one two", stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 4
    assert with_usage[-1].usage.prompt_tokens == ask(sdk, "one two").usage.prompt_tokens


def test_scripted_server_streams_tool_calls_in_its_servers_chunking(server, sdk):
    fragments = [call for chunk in ask(sdk, "tools", stream=True) for call in (chunk.choices[0].delta.tool_calls or [])]
    for index, expected in enumerate(CALLS):
        mine = [f for f in fragments if f.index == index]
        assert "".join(f.function.arguments or "" for f in mine) == expected["function"]["arguments"]
        named = [f for f in mine if f.function.name]
        assert {(f.id, f.type, f.function.name) for f in named} == {(expected["id"], "function", "add_item")}
        assert len(named) == (1 if server.app.stream_style == "openai" else len(mine)) and len(mine) > 1


def test_scripted_server_streams_reasoning(sdk):
    chunks = list(ask(sdk, "think", stream=True))
    assert "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks) == REASONING
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello there."


@pytest.fixture(scope="module")
def shared_proxy(shared_server, tmp_path_factory):
    app = ProxyApp(shared_server.base_url, TraceWriter(tmp_path_factory.mktemp("traces")), token=None)
    with BackgroundServer(app, lifespan="on") as proxy:
        yield proxy


@pytest.fixture
def proxied(shared_proxy, server, traces):
    """A client of the module's proxy, which records this test's exchanges in `traces`."""
    shared_proxy.app.writer = TraceWriter(traces)
    with openai.OpenAI(base_url=shared_proxy.url + "/v1", api_key="x", max_retries=0, timeout=10) as client:
        yield client
    shared_proxy.app.writer.close()


@pytest.mark.parametrize("text", ["tools", "think", "plain words here"])
def test_streamed_and_unstreamed_replies_are_recorded_alike(proxied, traces, text):
    ask(proxied, text)
    list(ask(proxied, text, stream=True))
    plain, streamed = read_traces(traces)
    assert streamed["stream"] is True and plain["stream"] is False
    assert streamed["response"] == plain["response"]
    if text == "tools":
        assert plain["response"]["tool_calls"] == CALLS  # id, type and name once each, arguments whole
        assert plain["response"]["content"] is None and plain["response"]["finish_reason"] == "tool_calls"
    if text == "think":
        assert plain["response"]["reasoning_content"] == REASONING and plain["response"]["content"] == "Hello there."


def test_reasoning_of_earlier_turns_is_kept_in_the_request(proxied, traces):
    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet back."},
                {"role": "user", "content": "think"}]
    proxied.chat.completions.create(model="m", messages=messages)
    [record] = read_traces(traces)
    assert record["request"]["messages"] == messages


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_reaches_sft_rows_and_replay_datasets(proxied, traces, stream):
    from lmgym.flywheel import traces as tr

    messages = [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hello.", "reasoning_content": "Greet back."},
                {"role": "user", "content": "think"}]
    result = proxied.chat.completions.create(model="m", messages=messages, stream=stream)
    if stream:
        list(result)
    counts = tr.Counts()
    [selected] = tr.select_traces(tr.read_traces(tr.trace_files([traces]), counts), tr.TraceFilter(), counts)
    sft = tr.sft_row(selected)
    assert sft["completion"] == [{"role": "assistant", "content": "Hello there.", "reasoning_content": REASONING}]
    assert sft["prompt"][1]["reasoning_content"] == "Greet back."
    replay = tr.env_row(selected)
    assert replay["answer"] == "Hello there." and replay["info"]["reasoning_content"] == REASONING
    assert replay["prompt"][1]["reasoning_content"] == "Greet back."
