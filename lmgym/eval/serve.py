"""`OpenEnvApp`: any lmgym environment served over the OpenEnv protocol (`lmgym serve ENV`),
so trainers that speak OpenEnv (TRL, SkyRL, ART, OpenEnv's own clients) can use it.

The protocol (see `lmgym.envs.openenv` for the client side): `GET /health`, `/schema`,
`/metadata`, `/state`, and one episode per WebSocket session at `/ws`, where the client
sends `reset`, `step`, `state` and `close` messages and gets `observation`, `state` or
`error` messages back. Over plain HTTP, `POST /reset` shows an example's first
observation; a `POST /step` without a session cannot continue anything and says so.

An episode is lmgym's own rollout loop, unchanged: the environment's hooks, tools, turn
budget and rubric run as they do in `lmgym eval`. The model is the client on the other end
of the session: the loop's requests to its "model" become observations (the messages the
model has not seen yet, and the tools it may call), and each `step` action is the model's
reply: `{"content": "..."}` and/or `{"tool_calls": [...]}` in the OpenAI wire format.
When the episode ends, the rubric scores it: the last observation carries the reward,
`done: true` and the rubric's metrics.

`reset` takes `seed` (the example is `seed % len(examples)`, so seeds walk the split)
or `example_id`; the split is the environment's evaluation split unless the app was made
with `split="train"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from lmgym.envs.base import Environment
from lmgym.types import Example, ModelResponse, Rollout, Usage

logger = logging.getLogger(__name__)

ACTION_SCHEMA = {
    "title": "AssistantMessage", "type": "object",
    "description": "The model's reply, as an OpenAI chat message: its text, its tool calls, or both.",
    "properties": {
        "content": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
        "tool_calls": {"type": "array", "items": {"type": "object"}, "default": []},
    },
}
OBSERVATION_SCHEMA = {
    "title": "Messages", "type": "object",
    "properties": {
        "messages": {"type": "array", "items": {"type": "object"}, "description": "Messages the model has not seen yet"},
        "tools": {"anyOf": [{"type": "array", "items": {"type": "object"}}, {"type": "null"}]},
        "metrics": {"type": "object", "description": "The rubric's metrics, once the episode is done"},
        "error": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
}
STATE_SCHEMA = {
    "title": "State", "type": "object",
    "properties": {"episode_id": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "step_count": {"type": "integer"},
                   "example_id": {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}},
}


class ActionError(ValueError):
    """A step's action is not an assistant message."""


def assistant_message(action: Any) -> dict[str, Any]:
    """The model's reply from a step's action, checked."""
    if not isinstance(action, dict):
        raise ActionError(f"the action must be an object like {{\"content\": \"...\"}}, got {type(action).__name__}")
    unknown = sorted(set(action) - {"content", "tool_calls", "role", "metadata"})
    if unknown:
        raise ActionError(f"unknown action fields {unknown}: an action is an assistant message (content, tool_calls)")
    content, calls = action.get("content"), action.get("tool_calls") or []
    if content is not None and not isinstance(content, str):
        raise ActionError("content must be a string or null")
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict) for c in calls):
        raise ActionError("tool_calls must be a list of {\"id\", \"type\": \"function\", \"function\": {\"name\", \"arguments\"}}")
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return message


@dataclass
class Episode:
    """One session's rollout, run as a task that waits on the client for each reply."""

    env: Environment
    example: Example
    episode_id: str | None = None
    step_count: int = 0
    requests: asyncio.Queue = field(default_factory=asyncio.Queue)  # (messages, tools, future) per model call
    seen: int = 0  # messages of the conversation the client has been shown
    task: asyncio.Task | None = None
    _future: asyncio.Future | None = None  # the loop's pending request for a reply

    async def chat(self, messages, *, model: str, sampling=None, tools=None) -> ModelResponse:
        """The rollout loop's model: hand the conversation to the client and wait for its reply."""
        future = asyncio.get_running_loop().create_future()
        await self.requests.put((list(messages), tools, future))
        return await future

    async def aclose(self) -> None:
        pass

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> Rollout:
        rollout = await self.env.rollout(self, "openenv-client", self.example)
        if rollout.error is None:
            await self.env.score_group([rollout])
        return rollout

    async def next_observation(self) -> dict[str, Any]:
        """The next request for a reply, or the end of the episode: an observation payload."""
        waiting = asyncio.ensure_future(self.requests.get())
        done, _ = await asyncio.wait({waiting, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            messages, tools, self._future = waiting.result()
            new, self.seen = messages[self.seen:], len(messages)
            return {"observation": {"messages": new, "tools": tools}, "reward": None, "done": False}
        waiting.cancel()
        rollout = self.task.result()
        last = rollout.turns[-1].env_messages if rollout.turns else []
        observation = {"messages": list(last), "tools": None, "metrics": dict(rollout.metrics),
                       "error": f"{rollout.error.kind}: {rollout.error.message}" if rollout.error else None}
        return {"observation": observation, "reward": rollout.reward, "done": True}

    def reply(self, message: dict[str, Any]) -> None:
        self.step_count += 1
        self.seen += 1  # the client wrote this message itself
        self._future.set_result(ModelResponse(message, "tool_calls" if message.get("tool_calls") else "stop", Usage(requests=1), 0.0))

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


class OpenEnvApp:
    """The ASGI app serving `env`'s examples of `split` ("eval" or "train")."""

    def __init__(self, env: Environment, name: str, split: str = "eval"):
        self.env, self.name = env, name
        source = env.dataset if split == "train" else (env.eval_dataset if env.eval_dataset is not None else env.dataset)
        if not source:
            raise ValueError(f"{name} has no {split} examples to serve")
        self.examples = list(source)
        self.by_id = {str(e.id): e for e in self.examples}

    def example_for(self, data: dict[str, Any]) -> Example:
        if data.get("example_id") is not None:
            key = str(data["example_id"])
            if key not in self.by_id:
                raise ActionError(f"no example with id {key!r} ({len(self.examples)} examples)")
            return self.by_id[key]
        return self.examples[int(data.get("seed") or 0) % len(self.examples)]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket" and scope["path"] == "/ws":
            await self._session(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.env.start()
                except Exception as exc:  # noqa: BLE001 - reported to uvicorn, which stops
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.env.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- plain HTTP --------------------------------------------------------------------------
    async def _http(self, scope, receive, send) -> None:
        method, path = scope["method"], scope["path"]
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        routes = {
            ("GET", "/health"): lambda: (200, {"status": "healthy"}),
            ("GET", "/schema"): lambda: (200, {"action": ACTION_SCHEMA, "observation": OBSERVATION_SCHEMA, "state": STATE_SCHEMA}),
            ("GET", "/metadata"): lambda: (200, {"name": self.name, "description": f"lmgym environment {self.name}",
                                                 "version": None, "author": None}),
            ("GET", "/state"): lambda: (200, {"episode_id": None, "step_count": 0, "example_id": None}),
            ("POST", "/step"): lambda: (409, {"detail": "an episode lives on a WebSocket session: connect to /ws, reset, then step"}),
        }
        if (method, path) == ("POST", "/reset"):
            status, payload = await self._http_reset(body)
        elif (method, path) in routes:
            status, payload = routes[(method, path)]()
        else:
            status, payload = 404, {"detail": "Not Found"}
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": orjson.dumps(payload)})

    async def _http_reset(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """A stateless reset, as OpenEnv's HTTP route is: the example's first observation."""
        try:
            data = orjson.loads(body) if body.strip() else {}
            episode = Episode(self.env, self.example_for(data if isinstance(data, dict) else {}))
        except (ValueError, ActionError) as exc:
            return 422, {"detail": str(exc)}
        episode.start()
        try:
            return 200, await episode.next_observation()
        finally:
            await episode.close()

    # -- sessions --------------------------------------------------------------------------
    async def _session(self, receive, send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        episode: Episode | None = None

        async def answer(kind: str, data: dict[str, Any]) -> None:
            await send({"type": "websocket.send", "text": orjson.dumps({"type": kind, "data": data}).decode()})

        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                try:
                    message = orjson.loads(event.get("text") or event.get("bytes") or b"")
                except orjson.JSONDecodeError as exc:
                    await answer("error", {"message": f"Invalid JSON: {exc}", "code": "INVALID_JSON"})
                    continue
                kind = message.get("type") if isinstance(message, dict) else None
                data = message.get("data") or {} if isinstance(message, dict) else {}
                try:
                    if kind == "reset":
                        if episode is not None:
                            await episode.close()
                        episode = Episode(self.env, self.example_for(data), episode_id=data.get("episode_id"))
                        episode.start()
                        await answer("observation", await episode.next_observation())
                    elif kind == "step":
                        if episode is None or episode.task is None or episode.task.done():
                            raise ActionError("no episode in progress: send a reset first")
                        episode.reply(assistant_message(data))
                        await answer("observation", await episode.next_observation())
                    elif kind == "state":
                        await answer("state", {"episode_id": episode.episode_id if episode else None,
                                               "step_count": episode.step_count if episode else 0,
                                               "example_id": episode.example.id if episode else None})
                    elif kind == "close":
                        break
                    else:
                        await answer("error", {"message": f"Unknown message type: {kind}", "code": "UNKNOWN_TYPE"})
                except ActionError as exc:
                    await answer("error", {"message": str(exc), "code": "VALIDATION_ERROR",
                                           "errors": [{"loc": ["action"], "msg": str(exc)}]})
                except Exception as exc:  # noqa: BLE001 - the environment failed: this session's error
                    logger.exception("episode failed")
                    await answer("error", {"message": f"{type(exc).__name__}: {exc}", "code": "EXECUTION_ERROR"})
        finally:
            if episode is not None:
                await episode.close()
        await send({"type": "websocket.close", "code": 1000})
