"""OpenAIClient over real HTTP against the scripted server: answers, retries, faults."""

from __future__ import annotations

import time

import pytest

from lmgym import errors
from lmgym.clients.openai import OpenAIClient
from lmgym.clients.retry import backoff_delay, parse_retry_after
from lmgym.testing import ScriptedServer, tool_call

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def four(request) -> str:
    return "4"


@pytest.fixture(scope="module")
def shared_server():
    """One scripted server for the module (stopping one takes about 0.2 s, and longer while
    a stalled answer is pending)."""
    with ScriptedServer(reply=four) as s:
        yield s


@pytest.fixture
def server(shared_server):
    """The module's server answering "4" to any key, with no requests and no faults yet."""
    app = shared_server.app
    app.reply, app.api_key = four, None
    app.requests.clear()
    app.faults.clear()
    return shared_server


def fast_client(server, **kwargs) -> OpenAIClient:
    kwargs = {"backoff_base": 0.01, "backoff_max": 0.05, **kwargs}
    return OpenAIClient(server.base_url, "sk-test", **kwargs)


async def test_chat_returns_message_usage_and_latency(server):
    client = fast_client(server)
    response = await client.chat(MESSAGES, model="m", sampling={"temperature": 0.5, "top_k": 3})
    await client.aclose()
    assert response.message == {"role": "assistant", "content": "4"}
    assert response.finish_reason == "stop"
    assert response.usage.completion_tokens == 1 and response.usage.prompt_tokens == 3  # words of "What is 2+2?"
    assert response.latency_s > 0
    # sampling arguments, known to the SDK or not, reach the server unchanged
    assert server.requests[0]["temperature"] == 0.5 and server.requests[0]["top_k"] == 3
    assert client.usage.requests == 1


async def test_tool_calls_are_returned(server):
    call = tool_call("add", {"a": 1, "b": 2})
    server.app.reply = lambda request: {"content": None, "tool_calls": [call]}
    client = fast_client(server)
    response = await client.chat(MESSAGES, model="m", tools=[{"type": "function", "function": {"name": "add"}}])
    await client.aclose()
    assert response.message["tool_calls"] == [call]
    assert response.finish_reason == "tool_calls"
    assert server.requests[0]["tools"][0]["function"]["name"] == "add"


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(server, status):
    server.fail_next(status, times=2)
    client = fast_client(server)
    response = await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert response.message["content"] == "4"
    assert len(server.requests) == 3


async def test_rate_limit_honours_retry_after(server):
    server.fail_next(429, times=1, retry_after=0.2)
    client = fast_client(server)
    started = time.perf_counter()
    await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert time.perf_counter() - started >= 0.2  # backoff alone would wait ≤ 0.05 s
    assert len(server.requests) == 2


async def test_gives_up_after_max_retries(server):
    server.fail_next(503, times=10)
    client = fast_client(server, max_retries=2)
    with pytest.raises(errors.ModelServerError, match="gave up after 3 attempts"):
        await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert len(server.requests) == 3


async def test_stall_times_out_then_retry_succeeds(server):
    server.stall_next(1.0)  # the module's server goes on serving other tests meanwhile
    client = fast_client(server, timeout=0.3)
    response = await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert response.message["content"] == "4"
    assert len(server.requests) == 2  # the stalled try, then the retry


async def test_stall_every_time_is_a_timeout_error(server):
    server.stall_next(1.0, times=3)
    client = fast_client(server, timeout=0.2, max_retries=1)
    with pytest.raises(errors.ModelTimeoutError):
        await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert len(server.requests) == 2


async def test_malformed_json_is_retried_then_reported(server):
    server.malformed_next(1)
    client = fast_client(server)
    assert (await client.chat(MESSAGES, model="m")).message["content"] == "4"
    server.malformed_next(5)
    client2 = fast_client(server, max_retries=1)
    with pytest.raises(errors.ModelResponseError, match="malformed"):
        await client2.chat(MESSAGES, model="m")
    await client.aclose()
    await client2.aclose()


async def test_bad_request_is_not_retried(server):
    server.fail_next(400, times=3)
    client = fast_client(server)
    with pytest.raises(errors.ModelRequestError, match="HTTP 400"):
        await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert len(server.requests) == 1


async def test_rejected_key_is_fatal_and_never_echoed(server):
    server.app.api_key = "sk-right"
    client = OpenAIClient(server.base_url, "sk-wrong-secret", backoff_base=0.01)
    with pytest.raises(errors.ModelAuthError) as info:
        await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert info.value.fatal
    assert "sk-wrong-secret" not in str(info.value) and "sk-wrong-secret" not in repr(client)
    assert len(server.requests) == 0  # rejected before the handler, and not retried


async def test_unreachable_server_is_fatal_connection_error():
    from lmgym.embedded import free_port

    client = OpenAIClient(f"http://127.0.0.1:{free_port()}/v1", "x", max_retries=1, backoff_base=0.01)
    with pytest.raises(errors.ModelConnectionError, match="cannot reach") as info:
        await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert info.value.fatal


async def test_empty_content_is_an_error_not_retried(server):
    server.app.reply = lambda request: ""
    client = fast_client(server)
    with pytest.raises(errors.EmptyResponseError):
        await client.chat(MESSAGES, model="m")
    await client.aclose()
    assert len(server.requests) == 1


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    assert backoff_delay(0, base=1, cap=10, rand=lambda: 0.0) == 0.5
    assert backoff_delay(0, base=1, cap=10, rand=lambda: 1.0) == 1.0
    assert backoff_delay(3, base=1, cap=10, rand=lambda: 1.0) == 8.0
    assert backoff_delay(10, base=1, cap=10, rand=lambda: 1.0) == 10.0
    assert backoff_delay(10, base=1, cap=10, retry_after=2.5) == 2.5


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_null_content_is_sent_as_empty_text():
    from lmgym.clients.openai import wire_messages

    plain = [{"role": "user", "content": "hi"}]
    assert wire_messages(plain) is plain  # nothing copied on the hot path
    calls = [{"role": "assistant", "content": None, "tool_calls": []}]
    assert wire_messages(calls) == [{"role": "assistant", "content": "", "tool_calls": []}]
    assert calls[0]["content"] is None  # the rollout's own record is untouched
