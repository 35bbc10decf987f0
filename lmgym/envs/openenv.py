"""`OpenEnvEnv`: an OpenEnv environment server as an lmgym environment.

OpenEnv (the `openenv-core` package) serves an environment over HTTP and WebSocket:
`GET /health`, `GET /schema` (JSON schemas of its action, observation and state) and one
WebSocket session per episode at `/ws`, on which the client sends `{"type": "reset",
"data": {...}}`, `{"type": "step", "data": ACTION}`, `{"type": "state"}` and `{"type":
"close"}`, and the server answers `{"type": "observation", "data": {"observation": {...},
"reward": R, "done": D}}`, `{"type": "state", "data": {...}}` or `{"type": "error", "data":
{"message": ..., "code": ...}}`.

Each lmgym rollout is one episode on its own WebSocket session: reset with the example's
seed, the first observation becomes the prompt, and every reply of the model is one
action. How a reply becomes an action follows the action's schema:

- `text`: the action has one string field (e.g. `message`); the reply's text fills it.
- `tool`: otherwise the action is offered as one tool, `act`, whose parameters are the
  action's fields; the model's call is the action, the observation its result.

An observation is shown to the model as its one string field when it has exactly one,
else as JSON; an action the server's schema refuses is answered with the server's reasons,
and the episode goes on. The reward is the sum of the rewards the server sent (`reward="last"`: the
last one); the episode ends when the server says `done`. An unreachable server, or one
that does not speak this protocol, stops the run before the first rollout; a session that
fails mid-run is that rollout's error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from lmgym import errors
from lmgym.clients.http import http
from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Messages, Rollout, RolloutError

ACT_TOOL = "act"
CLOSE_WAIT_S = 5.0  # how long a closed session's server may take to close the connection
IGNORED_FIELDS = {"metadata"}  # every OpenEnv action and observation has one; it is not for the model
EVAL_SEED_OFFSET = 1_000_000  # evaluation episodes reset with seeds of their own


class OpenEnvProtocolError(errors.LmgymError):
    """The server is unreachable or does not speak OpenEnv: every rollout would fail alike."""

    kind = "openenv"
    fatal = True


def schema_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The properties of a JSON schema a model may set or read, without OpenEnv's metadata."""
    return {k: v for k, v in (schema.get("properties") or {}).items() if k not in IGNORED_FIELDS}


def text_field(action_schema: dict[str, Any]) -> str | None:
    """The action's one string field, when it has exactly one field and it is a string."""
    fields = schema_fields(action_schema)
    if len(fields) == 1:
        (name, spec), = fields.items()
        if spec.get("type") == "string":
            return name
    return None


def act_tool(action_schema: dict[str, Any]) -> dict[str, Any]:
    """The action offered as a tool: its fields are the tool's parameters."""
    fields = schema_fields(action_schema)
    required = [name for name in action_schema.get("required", []) if name in fields]
    description = action_schema.get("description") or "Take one action in the environment."
    return {"type": "function", "function": {
        "name": ACT_TOOL, "description": description,
        "parameters": {"type": "object", "properties": fields, "required": required},
    }}


def observation_text(observation: dict[str, Any]) -> str:
    """What the model reads: the one string field of an observation, else its JSON."""
    shown = {k: v for k, v in observation.items() if k not in IGNORED_FIELDS}
    if len(shown) == 1 and isinstance(next(iter(shown.values())), str):
        return next(iter(shown.values()))
    return json.dumps(shown, ensure_ascii=False, sort_keys=True)


def parse_reply(raw: str | bytes) -> dict[str, Any]:
    """One server message's `data`; an error message, or anything that is not the protocol,
    raises (this rollout's error)."""
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise errors.EnvironmentHookError(f"OpenEnv server sent a message that is not JSON: {str(raw)[:200]!r}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise errors.EnvironmentHookError(f"OpenEnv server sent a message without a `data` object: {str(raw)[:200]!r}")
    if message.get("type") == "error":
        data = message["data"]
        if data.get("code") == "VALIDATION_ERROR":  # the action broke the action's schema: the model is told
            problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in data.get("errors") or [])
            raise errors.InvalidAction(f"the environment refused the action: {problems or data.get('message', '')}")
        raise errors.EnvironmentHookError(f"OpenEnv server error ({data.get('code', 'unknown')}): {data.get('message', '')}")
    return message["data"]


class OpenEnvEnv(MultiTurnEnv):
    """Episodes of the OpenEnv server at `url`: `num_examples` training episodes (reset
    seeds 0..n-1) and `num_eval_examples` evaluation episodes (seeds of their own).
    `action="auto"` maps replies to actions as the module docstring says; "text" or
    "tool" forces one way (`text_field` names the field for "text")."""

    def __init__(
        self,
        url: str,
        *,
        num_examples: int = 100,
        num_eval_examples: int = 20,
        action: Literal["auto", "text", "tool"] = "auto",
        text_field: str | None = None,
        reward: Literal["sum", "last"] = "sum",
        reset_args: dict[str, Any] | None = None,
        system_prompt: str | None = None,
        max_turns: int = 10,
        timeout: float = 30.0,
    ):
        if action not in ("auto", "text", "tool"):
            raise ValueError(f"action must be 'auto', 'text' or 'tool', got {action!r}")
        if reward not in ("sum", "last"):
            raise ValueError(f"reward must be 'sum' or 'last', got {reward!r}")
        if num_examples < 0 or num_eval_examples < 1:
            raise ValueError(f"num_examples must be >= 0 and num_eval_examples >= 1, got {num_examples}, {num_eval_examples}")
        self.url = url.rstrip("/")
        self.action, self.text_field, self.reward_mode = action, text_field, reward
        self.reset_args = dict(reset_args or {})
        self.timeout = timeout
        placeholder = "(the environment's first observation)"  # replaced by the reset's observation
        rows = [{"question": placeholder, "seed": seed} for seed in range(num_examples)]
        eval_rows = [{"question": placeholder, "seed": EVAL_SEED_OFFSET + i} for i in range(num_eval_examples)]
        super().__init__(
            rows or None, eval_rows, system_prompt=system_prompt, max_turns=max_turns,
            rubric=Rubric(funcs=[self.episode_reward]),
        )

    # -- connecting ------------------------------------------------------------------------
    async def start(self) -> None:
        """Ask the server for its health and schema, and decide how replies become actions."""
        try:
            async with http.AsyncClient(timeout=self.timeout) as client:
                health = await client.get(f"{self.url}/health")
                schema = await client.get(f"{self.url}/schema")
        except http.HTTPError as exc:
            raise OpenEnvProtocolError(f"OpenEnv server {self.url} is unreachable: {type(exc).__name__}: {exc}") from exc
        if health.status_code != 200 or schema.status_code != 200:
            raise OpenEnvProtocolError(
                f"{self.url} does not answer as an OpenEnv server: GET /health gave {health.status_code}, "
                f"GET /schema gave {schema.status_code}"
            )
        try:
            action_schema = schema.json()["action"]
        except (ValueError, KeyError, TypeError) as exc:
            raise OpenEnvProtocolError(f"{self.url}/schema holds no action schema: {schema.text[:200]!r}") from exc
        self.configure(action_schema)

    def configure(self, action_schema: dict[str, Any]) -> None:
        """Text actions or the `act` tool, from the action schema and the settings."""
        field = self.text_field or text_field(action_schema)
        if self.action == "text" and field is None:
            raise OpenEnvProtocolError(
                f"action='text', but the action of {self.url} has no single string field "
                f"(its fields: {', '.join(schema_fields(action_schema)) or 'none'}); set text_field or use action='tool'"
            )
        if self.action == "text" or (self.action == "auto" and field is not None):
            self.text_field, self.tools = field, None
        else:
            self.text_field, self.tools = None, [act_tool(action_schema)]

    # -- one episode -----------------------------------------------------------------------
    async def rollout(self, client, model, example, *, index=0, sampling_args=None):
        """Open the episode's session and reset it; its first observation is the prompt."""
        context = self.rollout_context(client, model, example, index=index, sampling_args=sampling_args)
        session = await self._connect()
        context.state["rewards"] = []
        try:
            first = await self._send(session, {"type": "reset", "data": {"seed": example.info["seed"], **self.reset_args}})
        except errors.LmgymError as exc:
            await self._close(session)
            if exc.fatal:
                raise
            return Rollout(example, index, state=context.state, error=RolloutError(exc.kind, f"reset: {exc}"))
        except BaseException:
            await self._close(session)
            raise
        context.state["openenv"] = session
        self._record(context.state, first)
        system = [m for m in example.prompt if m["role"] == "system"]
        return await self.run_rollout(context, [*system, {"role": "user", "content": observation_text(first.get("observation") or {})}])

    async def _connect(self) -> Any:
        from websockets.asyncio.client import connect

        ws_url = "ws" + self.url[len("http"):] if self.url.startswith("http") else self.url
        try:
            return await connect(f"{ws_url}/ws", open_timeout=self.timeout, max_size=None)
        except (OSError, TimeoutError) as exc:
            raise OpenEnvProtocolError(f"cannot open an OpenEnv session at {ws_url}/ws: {exc}") from exc

    async def _send(self, session: Any, message: dict[str, Any]) -> dict[str, Any]:
        """Send one message and read the answer; a session that breaks or goes silent for
        `timeout` seconds fails this rollout."""
        try:
            await session.send(json.dumps(message))
            raw = await asyncio.wait_for(session.recv(), self.timeout)
        except Exception as exc:  # noqa: BLE001 - closed connections, timeouts: this episode's failure
            raise errors.EnvironmentHookError(f"OpenEnv session at {self.url} failed on {message['type']}: {type(exc).__name__}: {exc}") from exc
        return parse_reply(raw)

    @staticmethod
    async def _close(session: Any) -> None:
        """Ask the server to end the session and let it close the connection: closing from
        this side at once races the server's own close (openenv-core then logs a traceback
        per episode)."""
        try:
            await session.send(json.dumps({"type": "close"}))
            await asyncio.wait_for(session.wait_closed(), CLOSE_WAIT_S)
        except Exception:  # noqa: BLE001 - closing a session that already broke, or a server slow to close
            pass
        await session.close()

    def _record(self, state: dict[str, Any], data: dict[str, Any]) -> None:
        if data.get("reward") is not None:
            state["rewards"].append(float(data["reward"]))
        state["done"] = bool(data.get("done"))

    async def teardown_state(self, state: dict[str, Any]) -> None:
        session = state.pop("openenv", None)
        if session is not None:
            await self._close(session)

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        if state.get("done"):
            return True
        last = messages[-1]
        # a tool-using model that answers in text instead of acting has finished
        return self.tools is not None and last["role"] == "assistant" and not last.get("tool_calls")

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        reply = messages[-1]
        session = state["openenv"]
        if self.text_field is not None:
            try:
                data = await self._send(session, {"type": "step", "data": {self.text_field: reply.get("content") or ""}})
            except errors.InvalidAction as exc:
                return [{"role": "user", "content": f"error: {exc}"}]
            self._record(state, data)
            return [{"role": "user", "content": observation_text(data.get("observation") or {})}]
        answers = []
        for call in reply.get("tool_calls") or []:
            answers.append({"role": "tool", "tool_call_id": call.get("id"), "content": await self._act(session, state, call)})
            if state.get("done"):
                break
        return answers

    async def _act(self, session: Any, state: dict[str, Any], call: dict[str, Any]) -> str:
        """One tool call as one step; a call the server cannot take is answered, not fatal."""
        function = call.get("function") or {}
        if function.get("name") != ACT_TOOL:
            return f"error: unknown tool {function.get('name')!r}; the only tool is {ACT_TOOL!r}"
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            return f"error: the arguments are not JSON: {function.get('arguments')!r}"
        if not isinstance(arguments, dict):
            return "error: the arguments must be a JSON object"
        try:
            data = await self._send(session, {"type": "step", "data": arguments})
        except errors.InvalidAction as exc:
            return f"error: {exc}"
        self._record(state, data)
        return observation_text(data.get("observation") or {})

    def episode_reward(self, state: dict[str, Any]) -> float:
        rewards = state.get("rewards") or [0.0]
        return rewards[-1] if self.reward_mode == "last" else sum(rewards)
