"""The per-rollout context: hooks that declare `context` get their own rollout's, however
many rollouts one environment object runs at once; hooks written without it are called as
before; a forgotten abstract hook stops the environment from being created; an EnvGroup
scores without rewriting its rollouts.

Every model is the scripted OpenAI-compatible server on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from lmgym import (
    EnvGroup,
    Environment,
    MultiAgentEnv,
    MultiTurnEnv,
    OpenAIClient,
    RolloutContext,
    Rubric,
    SingleTurnEnv,
)
from lmgym.envs.game import GuessingGameEnv
from lmgym.testing import ScriptedServer

N = 50


def offered_tool(request) -> str:
    """A model that names the first tool it was offered."""
    return request["tools"][0]["function"]["name"] if request.get("tools") else "no tools"


def tool_schema(name: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": "", "parameters": {"type": "object", "properties": {}}}}


class PerExample(MultiTurnEnv):
    """Each example offers its own tool; each rollout has a seat; every hook checks that
    the context it gets is its own rollout's, after yielding to the other rollouts."""

    def tools_for(self, example):
        return [tool_schema(f"tool_{example.id}")]

    def seat_for(self, example, index):
        return "ab"[index % 2]

    async def setup_state(self, state, example, context):
        assert context.state is state and context.example is example and context.env is self
        state.update(seen=[], example_id=example.id)

    async def on_reply(self, messages, state, context):
        await asyncio.sleep(context.rng.random() / 1000)  # let the other rollouts interleave
        state["seen"].append(("on_reply", context.example.id, context.seat, context.tools[0]["function"]["name"]))

    def is_done(self, messages, state, context):  # sync, with a context
        state["seen"].append(("is_done", context.example.id, context.seat, context.index))
        return len(state["seen"]) >= 6

    async def env_response(self, messages, state, context):
        await asyncio.sleep(context.rng.random() / 1000)
        state["seen"].append(("env_response", context.example.id, messages[-1]["content"], context.model))
        return [{"role": "user", "content": f"again, {context.example.answer}"}]

    def teardown_state(self, state, context):
        state["closed_for"] = context.example.id


async def test_fifty_concurrent_rollouts_of_one_environment_each_get_their_own_context():
    env = PerExample(eval_dataset=[{"question": f"q{i}", "answer": f"a{i}"} for i in range(N)], max_turns=5)
    with ScriptedServer(reply=offered_tool) as server:
        client = OpenAIClient(server.base_url)
        examples = env.get_eval_examples()
        rollouts = await asyncio.gather(*(env.rollout(client, "m", e, index=i % 3) for i, e in enumerate(examples)))
        await client.aclose()
    for i, (example, rollout) in enumerate(zip(examples, rollouts)):
        own, seat, tool = example.id, "ab"[i % 3 % 2], f"tool_{example.id}"
        assert rollout.error is None and rollout.state["example_id"] == own and rollout.state["closed_for"] == own
        assert rollout.state["seen"] == [
            ("on_reply", own, seat, tool), ("is_done", own, seat, i % 3), ("env_response", own, tool, "m"), ("is_done", own, seat, i % 3),
            ("on_reply", own, seat, tool), ("is_done", own, seat, i % 3),
        ]
        assert [m["content"] for m in rollout.completion] == [tool, f"again, {example.answer}", tool]
    offered = sorted(r["tools"][0]["function"]["name"] for r in server.requests)
    assert offered == sorted(f"tool_{e.id}" for e in examples for _ in range(2))  # each request offered its example's tool


def test_the_context_is_fixed_once_the_rollout_starts():
    env = PerExample(eval_dataset=[{"question": "q"}])
    context = env.rollout_context(None, "m", env.eval_dataset[0], index=3, sampling_args={"temperature": 0})
    assert isinstance(context, RolloutContext) and context.seat == "b" and context.tools == [tool_schema("tool_0")]
    assert context.sampling == {"temperature": 0} and context.state == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.seat = "a"
    again = env.rollout_context(None, "m", env.eval_dataset[0], index=3)
    assert again.state is not context.state and again.rng.random() == context.rng.random()  # seeded by example and index


class OldStyle(MultiTurnEnv):
    """Hooks as environments were written before the context: positional, sync and async mixed."""

    async def setup_state(self, st, ex):
        st["calls"] = [("setup_state", ex.id)]

    def on_reply(self, msgs, st):
        st["calls"].append(("on_reply", msgs[-1]["content"]))

    def is_done(self, msgs, st):
        st["calls"].append(("is_done", st["turn"]))
        return msgs[-1]["content"] == "stop"

    async def env_response(self, msgs, st):
        st["calls"].append(("env_response", st["turn"]))
        return [{"role": "user", "content": "go on"}]

    async def teardown_state(self, st):
        st["calls"].append(("teardown_state",))


class MixedStyle(OldStyle):
    """A subclass adding one hook with a context keeps the inherited ones as they were."""

    async def env_response(self, messages, state, context):
        state["calls"].append(("env_response with context", context.example.id))
        return await super().env_response(messages, state)


@pytest.mark.parametrize("env_class", [OldStyle, MixedStyle])
async def test_hooks_without_a_context_are_called_as_before(env_class):
    env = env_class(eval_dataset=[{"question": "q", "id": "x"}], max_turns=3)
    with ScriptedServer(reply=lambda r: "stop" if len(r["messages"]) > 2 else "more") as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0])
        await client.aclose()
    extra = [("env_response with context", "x")] if env_class is MixedStyle else []
    assert rollout.error is None and rollout.state["calls"] == [
        ("setup_state", "x"), ("on_reply", "more"), ("is_done", 1), *extra, ("env_response", 1), ("is_done", 1),
        ("on_reply", "stop"), ("is_done", 2), ("teardown_state",),
    ]


# --- abstract hooks ------------------------------------------------------------------------------------


class NoResponse(MultiTurnEnv):
    async def is_done(self, messages, state):
        return True


class HalfAGame(MultiAgentEnv):
    def new_game(self, state, example):
        pass

    def observe(self, state, seat):
        return ""


class NoJudge(GuessingGameEnv):
    pass


@pytest.mark.parametrize(("env_class", "kwargs", "message"), [
    (NoResponse, {}, "NoResponse cannot be created: it does not define env_response, which MultiTurnEnv leaves to its subclasses"),
    (HalfAGame, {"seats": ["a", "b"]}, "HalfAGame cannot be created: it does not define outcome, play, which MultiAgentEnv leaves"),
    (NoJudge, {}, "NoJudge cannot be created: it does not define judge, which GuessingGameEnv leaves"),
])
def test_an_environment_missing_an_abstract_hook_cannot_be_created(env_class, kwargs, message):
    with pytest.raises(TypeError, match=message):
        env_class(eval_dataset=[{"question": "q"}], **kwargs)


def test_the_kinds_that_need_no_more_hooks_are_created():
    assert isinstance(Environment(eval_dataset=[{"question": "q"}]), Environment)  # the model alone, up to max_turns
    assert SingleTurnEnv(eval_dataset=[{"question": "q"}]).max_turns == 1


# --- EnvGroup -------------------------------------------------------------------------------------------


async def test_an_env_group_scores_without_rewriting_its_rollouts():
    """The rubric sees the example as its environment knows it; the group's rollouts show
    the group's labels all along (another task reading them never sees the other ones)."""
    seen, shown = [], []

    async def own_labels(example_id, task) -> float:
        seen.append((example_id, task))
        await asyncio.sleep(0.01)
        return 1.0

    def single(name):
        return SingleTurnEnv(eval_dataset=[{"question": name, "task": f"{name}-task"}], rubric=Rubric([own_labels]))

    group = EnvGroup({"a": single("a"), "b": single("b")})
    with ScriptedServer(reply="ok") as server:
        client = OpenAIClient(server.base_url)
        example = group.get_eval_examples()[1]
        rollouts = [await group.rollout(client, "m", example, index=i) for i in range(2)]
        await client.aclose()

    async def watch():
        while not seen:
            await asyncio.sleep(0)
        shown.extend((r.example.id, r.example.task) for r in rollouts)

    await asyncio.gather(group.score_group(rollouts), watch())
    assert seen == [(0, "b-task")] * 2 and shown == [("b/0", "b")] * 2
    assert [(r.example.id, r.example.task, r.reward, r.metrics) for r in rollouts] == [("b/0", "b", 1.0, {"own_labels": 1.0})] * 2
