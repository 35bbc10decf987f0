"""Scripted models for tests: reply functions for `lmgym.testing.ScriptedServer`, one scored
rollout of an environment against such a server, and tool calls as a model sends them.

Also an ASGI app served on loopback, and the request body it was sent.

Test files used to write each of these themselves; they differ only in what they pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Iterator

from lmgym import OpenAIClient
from lmgym.testing import BackgroundServer, ScriptedServer


def by_turn(*replies):
    """A reply function whose k-th reply in a conversation is replies[k], whatever it was told
    (k counts the assistant messages in the request)."""
    return lambda request: replies[sum(m["role"] == "assistant" for m in request["messages"])]


def raw_tool_call(name: str, arguments: dict[str, Any] | str, call_id: str = "c1") -> dict[str, Any]:
    """A tool call in the wire format; `arguments` given as a string is sent as it is (to test
    malformed JSON), unlike `lmgym.testing.tool_call`, which encodes a dict."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}}


async def rollout_on(base_url: str, env, example=None, *, model: str = "scripted", index: int = 0, score: bool = True,
                     timeout: float | None = None, **client_args):
    """One rollout of `env` (started and stopped around it) against the model at `base_url`,
    scored unless `score` is false; `example` defaults to the first of the eval split."""
    client = OpenAIClient(base_url, **{"max_retries": 0, **client_args})
    try:
        async with env.running():
            rollout = await asyncio.wait_for(env.rollout(client, model, example or env.eval_dataset[0], index=index), timeout)
            if score:
                await env.score_group([rollout])
    finally:
        await client.aclose()
    return rollout


async def run_scripted(env, reply, example=None, **options):
    """One scored rollout of `env` against a fresh ScriptedServer answering with `reply`:
    (the rollout, the server, whose `requests` the model received). Options as `rollout_on`."""
    with ScriptedServer(reply=reply) as server:
        rollout = await rollout_on(server.base_url, env, example, **options)
    return rollout, server


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """Serve an ASGI app on loopback; yields its /v1 base URL."""
    with BackgroundServer(app) as server:
        yield server.url + "/v1"


async def read_body(receive) -> bytes:
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            return body
