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
from scripted import read_body, serving

from lmgym import errors
from lmgym.clients.openai import OpenAIClient

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


# -- the timeout bounds a whole try -------------------------------------------------------------
async def test_a_reply_that_trickles_past_the_timeout_is_a_timeout():
    # each piece arrives well within 2 s, but the whole reply would take 8 s
    app = Trickle((16, 0.5))
    with serving(app) as base_url:
        slow = client(base_url, timeout=2.0, max_retries=0)
        started = time.perf_counter()
        with pytest.raises(errors.ModelTimeoutError):
            await slow.chat(MESSAGES, model="m")
        elapsed = time.perf_counter() - started
        await slow.aclose()
    assert 1.9 <= elapsed < 4.0
    assert app.requests == 1


async def test_a_trickle_that_ends_within_the_timeout_succeeds():
    app = Trickle((4, 0.25))  # about 1 s in all
    with serving(app) as base_url:
        patient = client(base_url, timeout=2.0, max_retries=0)
        response = await patient.chat(MESSAGES, model="m")
        await patient.aclose()
    assert response.message["content"] == "4"
    assert patient.usage.requests == 1 and patient.usage.completion_tokens == 1


async def test_each_try_gets_the_whole_timeout_again():
    app = Trickle((16, 0.5), (1, 0.0))  # the first reply is too slow, the retry is fast
    with serving(app) as base_url:
        retrying = client(base_url, timeout=1.0, max_retries=1)
        started = time.perf_counter()
        response = await retrying.chat(MESSAGES, model="m")
        elapsed = time.perf_counter() - started
        await retrying.aclose()
    assert response.message["content"] == "4"
    assert app.requests == 2 and 0.9 <= elapsed < 3.0
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
async def test_a_reply_of_the_wrong_shape_is_malformed_and_retried(shape):
    app = Sequence(WRONG_SHAPES[shape], WRONG_SHAPES[shape])
    with serving(app) as base_url:
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
