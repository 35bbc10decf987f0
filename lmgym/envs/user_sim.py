"""`UserSimEnv`: the other side of the conversation is a simulated user played by a model.

The policy is an agent (it may call tools, answered as in `ToolEnv`); when it replies
with text and no tool call, a `SimulatedUser` answers. The simulator is any
OpenAI-compatible endpoint with its own model, key variable and sampling. It has its own
conversation: a system prompt holding its persona and private goal (a template filled
from the example's `info`, e.g. `{persona}` and `{user_goal}`), then the chat with roles
flipped (its own messages are `assistant`, the agent's text is `user`); the agent's
system prompt, tool calls and tool results are hidden from it, as from a real customer.
The policy never sees the simulator's prompt.

The simulated user's first message is the example's (the prompt's last user message),
so every conversation starts the same way; the simulator's view begins with a fixed
greeting from the agent, because many chat templates want a `user` message first.

The episode ends when the simulator's reply holds `[DONE]` (goal met) or `[GIVE UP]`,
which its prompt asks for; the sentinel is stripped from the text the policy sees.
Otherwise it ends at `max_turns` agent replies (the simulator still answers the last
one, so a last reply that meets the goal counts). The rubric sees the whole transcript
(`completion`) and the private goal (`info`); `user_satisfied` and `user_gave_up` are
logged as weight-0 metrics.

`state` keys: `user_outcome` ("satisfied", "gave_up", or None when the turn budget
ended it), `user_turns` (simulator replies), `user_system_prompt` (what it was told),
`user_usage` (its tokens; `Rollout.usage` counts only the policy's).

Errors: a simulator that is unreachable or rejects the key stops the run, like the
policy's; any other failed simulator request (5xx after retries, an empty reply) makes
the rollout errored, never a reward of 0. Unlike `JudgeEndpoint`, replies are not cached:
the simulator samples anew at temperature > 0, and two rollouts that reach the same
point should get independent user replies.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lmgym import errors
from lmgym.clients.per_loop import LoopClients
from lmgym.envs.tools import StatefulToolEnv
from lmgym.rubrics.judge import message_text
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Example, Messages

USER_PROMPT = """You are role-playing a user who is chatting with an assistant. Stay in character, and never mention that you are an AI or that you follow instructions.

Who you are: {persona}
What you want: {user_goal}

Write only your next message: one to three short sentences. Give the facts the assistant asks for when you know them from the above; never invent others.
When everything you want has been done, thank the assistant and end your message with [DONE]. If the assistant says it cannot be done, or you have asked twice without success, end your message with [GIVE UP]."""
GREETING = "Hi! How can I help you today?"
SATISFIED, GAVE_UP = "satisfied", "gave_up"
_SENTINEL = re.compile(r"\[\s*(DONE|GIVE[\s_-]*UP)\s*\]", re.IGNORECASE)


def parse_user_reply(text: str) -> tuple[str, str | None]:
    """(the text without sentinels, outcome): "gave_up" if it says [GIVE UP], else
    "satisfied" if it says [DONE], else None (the conversation goes on)."""
    found = {m.group(1).upper()[0] for m in _SENTINEL.finditer(text)}
    outcome = GAVE_UP if "G" in found else SATISFIED if "D" in found else None
    return _SENTINEL.sub("", text).strip(), outcome


def user_view(messages: Messages, greeting: str = GREETING) -> Messages:
    """The chat as the simulated user sees it: the agent's greeting, then its own messages
    as `assistant` and the agent's text as `user`. System prompts, tool calls and tool
    results are left out; consecutive messages of one side are joined into one."""
    view: Messages = [{"role": "user", "content": greeting}]
    for message in messages:
        role, text = message.get("role"), message_text(message).strip()
        if role == "assistant" and not text and not message.get("tool_calls"):
            text = "(empty message)"  # a local model may reply with nothing at all
        if role not in ("user", "assistant") or not text:
            continue
        flipped = "assistant" if role == "user" else "user"
        if view[-1]["role"] == flipped:
            view[-1] = {"role": flipped, "content": f"{view[-1]['content']}\n\n{text}"}
        else:
            view.append({"role": flipped, "content": text})
    return view


@dataclass
class UserReply:
    text: str  # what the policy sees, sentinels stripped
    outcome: str | None
    raw: str  # the simulator's reply as written
    usage: dict[str, int]


class SimulatedUser:
    """A model behind an OpenAI-compatible API playing the user, one reply per call."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_var: str = "OPENAI_API_KEY",
        sampling: Mapping[str, Any] | None = None,
        prompt: str = USER_PROMPT,
        greeting: str = GREETING,
        max_concurrency: int = 64,
        max_retries: int = 3,
        timeout: float = 120.0,
    ):
        """`prompt` is the simulator's system prompt, a template whose fields (`{user_goal}`)
        come from each example's `info`."""
        self.model, self.base_url, self.api_key_var = model, base_url, api_key_var
        self.sampling = {"temperature": 0.7, "max_tokens": 256, **(sampling or {})}
        self.prompt, self.greeting = prompt, greeting
        self.fields = [name for _, name, _, _ in string.Formatter().parse(prompt) if name]
        # one client per event loop: training runs each step in its own loop
        self._clients = LoopClients(base_url, api_key_var, max_concurrency=max_concurrency, max_retries=max_retries, timeout=timeout)

    def __repr__(self) -> str:
        return f"SimulatedUser(model={self.model!r}, base_url={self.base_url!r})"

    def system_prompt(self, info: Mapping[str, Any]) -> str:
        missing = [name for name in self.fields if name not in info]
        if missing:
            raise errors.DatasetError(
                f"the simulated user's prompt names {missing}, which this example's info lacks; it has {sorted(info)}"
            )
        return self.prompt.format(**info)

    async def reply(self, system_prompt: str, messages: Messages) -> UserReply:
        """The user's next message after `messages` (the policy's view of the chat)."""
        bound = self._clients.bound()
        conversation = [{"role": "system", "content": system_prompt}, *user_view(messages, self.greeting)]
        try:
            async with bound.slot():
                response = await bound.client.chat(conversation, model=self.model, sampling=self.sampling)
        except errors.ModelError as exc:  # same kind (and fatality), saying whose request failed
            raise type(exc)(f"user simulator {self.model!r}: {exc}") from None
        raw = message_text(response.message)
        text, outcome = parse_user_reply(raw)
        if not text and outcome is None:
            raise errors.EmptyResponseError(f"user simulator {self.model!r}: replied with nothing to say ({raw!r})")
        return UserReply(text, outcome, raw, response.usage.to_dict())

    async def aclose(self) -> None:
        """Close the client of the running event loop."""
        await self._clients.aclose()


def user_satisfied(state) -> float:
    return float(state.get("user_outcome") == SATISFIED)


def user_gave_up(state) -> float:
    return float(state.get("user_outcome") == GAVE_UP)


class UserSimEnv(StatefulToolEnv):
    """An agent talks with a `SimulatedUser`, calling `tools` (optional) along the way.

    Every example's prompt must end with the user's opening message, and its `info` must
    hold the fields the simulator's prompt names (`user_goal`, `persona` by default)."""

    def __init__(
        self,
        *args: Any,
        user: SimulatedUser,
        tools: Sequence[Callable[..., Any]] = (),
        rubric: Rubric | None = None,
        **kwargs: Any,
    ):
        self.user = user
        rubric = rubric or Rubric(parser=kwargs.get("parser"))
        rubric.add(user_satisfied, weight=0.0).add(user_gave_up, weight=0.0)
        super().__init__(*args, tools=tools, rubric=rubric, **kwargs)
        for example in [*(self.dataset or []), *(self.eval_dataset or [])]:
            if not example.prompt or example.prompt[-1].get("role") != "user":
                raise errors.DatasetError(f"example {example.id!r}: the prompt must end with the simulated user's opening message")
            user.system_prompt(example.info)

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        state.update(
            user_outcome=None, user_turns=0, user_system_prompt=self.user.system_prompt(example.info),
            user_usage={"prompt_tokens": 0, "completion_tokens": 0, "requests": 0},
        )

    async def stop(self) -> None:
        await self.user.aclose()

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        return state["user_outcome"] is not None

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        if messages[-1].get("tool_calls"):
            return await super().env_response(messages, state)
        reply = await self.user.reply(state["user_system_prompt"], messages)
        state["user_turns"] += 1
        state["user_outcome"] = reply.outcome
        for key, value in reply.usage.items():
            state["user_usage"][key] += value
        return [{"role": "user", "content": reply.text}] if reply.text else []
