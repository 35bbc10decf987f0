"""OpenAIClient against servers that misbehave on the wire: replies that trickle in byte by
byte (the timeout bounds a whole try, not each read) and 200 replies of the wrong shape
(classified as malformed and retried). Each server is a small ASGI app on loopback."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson
import pytest
from scripted import read_body

from lmgym import errors
from lmgym.clients.openai import OpenAIClient
from lmgym.testing import BackgroundServer

MESSAGES = [{"role": "user", "content": "What is 2+2?"}]
GOOD = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


class Trickle:
    """Answers each request with GOOD, sent in `chunks` pieces `interval_s` apart (the
    headers, with the full Content-Length, go out at once). `plans` sets (chunks,
    interval_s) per request, in order; the last plan repeats."""

    def __init__(self, *plans: tuple[int, float]):
        self.plans = deque(plans)
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        self.requests += 1
        chunks, interval_s = self.plans[0] if len(self.plans) == 1 else self.plans.popleft()
        body = orjson.dumps(GOOD)
        size = -(-len(body) // chunks)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        hung_up = asyncio.ensure_future(receive())  # the next event is http.disconnect
        for start in range(0, len(body), size):
            if hung_up.done():  # the client gave up: stop, so the server shuts down at once
                return
            await send({"type": "http.response.body", "body": body[start : start + size], "more_body": True})
            await asyncio.sleep(interval_s)
        hung_up.cancel()
        await send({"type": "http.response.body", "body": b""})


def client(base_url: str, **kwargs) -> OpenAIClient:
    return OpenAIClient(base_url, "sk-test", **{"backoff_base": 0.01, "backoff_max": 0.05, **kwargs})


class Switch:
    """The app the module's one server serves: it hands each request to the app of the test
    that is running (a uvicorn server takes about 0.2 s to stop, one per test otherwise)."""

    app = None

    async def __call__(self, scope, receive, send) -> None:
        if self.app is not None:
            await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def shared_server():
    switch = Switch()
    with BackgroundServer(switch) as server:
        yield switch, server.url + "/v1"


@pytest.fixture
def serve(shared_server):
    """serve(app): the module's server answers with `app` for this test; its /v1 base URL."""
    switch, base_url = shared_server

    def serve(app) -> str:
        switch.app = app
        return base_url

    yield serve
    switch.app = None


# -- the timeout bounds a whole try -------------------------------------------------------------
async def test_a_reply_that_trickles_past_the_timeout_is_a_timeout(serve):
    # each piece arrives well within 1 s, but the whole reply would take 4 s
    app = Trickle((16, 0.25))
    slow = client(serve(app), timeout=1.0, max_retries=0)
    started = time.perf_counter()
    with pytest.raises(errors.ModelTimeoutError):
        await slow.chat(MESSAGES, model="m")
    elapsed = time.perf_counter() - started
    await slow.aclose()
    assert 0.95 <= elapsed < 3.0
    assert app.requests == 1


async def test_a_trickle_that_ends_within_the_timeout_succeeds(serve):
    app = Trickle((4, 0.15))  # about 0.6 s in all, each piece and the whole within the timeout
    patient = client(serve(app), timeout=1.5, max_retries=0)
    response = await patient.chat(MESSAGES, model="m")
    await patient.aclose()
    assert response.message["content"] == "4"
    assert patient.usage.requests == 1 and patient.usage.completion_tokens == 1


async def test_each_try_gets_the_whole_timeout_again(serve):
    app = Trickle((16, 0.15), (1, 0.0))  # the first reply is too slow (2.4 s), the retry is fast
    retrying = client(serve(app), timeout=0.6, max_retries=1)
    started = time.perf_counter()
    response = await retrying.chat(MESSAGES, model="m")
    elapsed = time.perf_counter() - started
    await retrying.aclose()
    assert response.message["content"] == "4"
    assert app.requests == 2 and 0.55 <= elapsed < 2.4
    assert retrying.usage.requests == 1  # the abandoned try returned nothing to count


# -- 200 replies of the wrong shape -------------------------------------------------------------
def choice(**fields: Any) -> dict[str, Any]:
    return {**GOOD, "choices": [{**GOOD["choices"][0], **fields}]}


WRONG_SHAPES = {
    "a list": [GOOD],
    "no choices": {"object": "chat.completion"},
    "choices a string": {**GOOD, "choices": "4"},
    "choices an object": {**GOOD, "choices": {"0": GOOD["choices"][0]}},
    "a choice that is a number": {**GOOD, "choices": [4]},
    "a message that is a string": choice(message="4"),
    "no message": {**GOOD, "choices": [{"index": 0, "finish_reason": "stop"}]},
    "content a number": choice(message={"role": "assistant", "content": 4}),
    "tool_calls a string": choice(message={"role": "assistant", "content": None, "tool_calls": "add(1, 2)"}),
    "finish_reason a list": choice(finish_reason=["stop"]),
    "usage a string": {**GOOD, "usage": "3 tokens"},
    "token count a string": {**GOOD, "usage": {"prompt_tokens": "three", "completion_tokens": 1}},
    "logprobs a string": choice(logprobs="-0.1"),
    "a logprob without its value": choice(logprobs={"content": [{"token": "4"}]}),
}


class Sequence:
    """Answers 200 with each of `bodies` in turn, then with GOOD."""

    def __init__(self, *bodies: Any):
        self.bodies = deque(bodies)
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        self.requests += 1
        body = orjson.dumps(self.bodies.popleft() if self.bodies else GOOD)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("shape", list(WRONG_SHAPES))
async def test_a_reply_of_the_wrong_shape_is_malformed_and_retried(serve, shape):
    app = Sequence(WRONG_SHAPES[shape], WRONG_SHAPES[shape])
    base_url = serve(app)
    once = client(base_url, max_retries=0)
    with pytest.raises(errors.ModelResponseError, match="malformed response") as info:
        await once.chat(MESSAGES, model="m")
    assert type(info.value) is errors.ModelResponseError  # not EmptyResponseError: it is the server's fault
    twice = client(base_url, max_retries=1)
    response = await twice.chat(MESSAGES, model="m")
    await once.aclose()
    await twice.aclose()
    assert response.message["content"] == "4" and app.requests == 3
    assert once.usage.requests == 0 and twice.usage.requests == 1
