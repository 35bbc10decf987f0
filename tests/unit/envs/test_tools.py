"""ToolEnv: schemas from functions, every kind of bad call answered, real HTTP end to end."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Literal, Optional

import pydantic
import pytest
from scripted import raw_tool_call

import lmgym
from lmgym import OpenAIClient
from lmgym.envs.tools import StatefulToolEnv, Tool, ToolEnv
from lmgym.testing import ScriptedServer, tool_call


class Point(pydantic.BaseModel):
    x: int
    y: int


def google(a: int, unit: Literal["cm", "m"] = "m", tags: Optional[list[str]] = None) -> str:
    """Measure something.

    Longer explanation here.

    Args:
        a: how many,
            over two lines.
        unit (str): the unit.
        tags: labels.

    Returns:
        A string.
    """
    return f"{a}{unit}"


def numpy(point: Point, scale: float = 1.0) -> dict:
    """Scale a point.

    Parameters
    ----------
    point : Point
        The point to scale.
    scale : float
        The factor.

    Returns
    -------
    dict
    """
    return {"x": point.x * scale, "y": point.y * scale}


def test_schema_from_google_docstring_and_hints():
    fn = Tool(google).schema["function"]
    assert fn["name"] == "google" and fn["description"] == "Measure something. Longer explanation here."
    props = fn["parameters"]["properties"]
    assert props["a"] == {"type": "integer", "description": "how many, over two lines."}
    assert props["unit"]["enum"] == ["cm", "m"] and props["unit"]["description"] == "the unit." and props["unit"]["default"] == "m"
    assert props["tags"]["default"] is None
    assert props["tags"]["anyOf"][0] == {"items": {"type": "string"}, "type": "array"}
    assert fn["parameters"]["required"] == ["a"]


def test_schema_from_numpy_docstring_and_pydantic_model():
    fn = Tool(numpy).schema["function"]
    assert fn["description"] == "Scale a point."
    props = fn["parameters"]["properties"]
    assert props["point"]["description"] == "The point to scale."
    assert set(props["point"]["properties"]) == {"x", "y"}
    assert props["scale"] == {"type": "number", "description": "The factor.", "default": 1.0}


async def respond(env, calls):
    state: dict = {}
    messages = [{"role": "assistant", "content": None, "tool_calls": calls}]
    return await env.env_response(messages, state), state


def boom(x: int) -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


async def slow(seconds: float) -> str:
    """Sleeps."""
    await asyncio.sleep(seconds)
    return "slept"


def env_with(*tools, **kwargs):
    return ToolEnv(eval_dataset=[{"question": "q"}], tools=list(tools), **kwargs)


async def test_bad_calls_come_back_as_precise_tool_messages():
    env = env_with(google, numpy, boom, slow, tool_timeout=0.2)
    cases = {
        "not json": (raw_tool_call("google", "{a: 1"), "not valid JSON"),
        "unknown tool": (raw_tool_call("nope", {}), "unknown tool 'nope'; available: ['boom', 'google', 'numpy', 'slow']"),
        "missing": (raw_tool_call("google", {}), "missing required argument(s) ['a']"),
        "unknown arg": (raw_tool_call("google", {"a": 1, "b": 2}), "unknown argument(s) ['b']"),
        "wrong type": (raw_tool_call("google", {"a": "many"}), "argument 'a'='many'"),
        "bad enum": (raw_tool_call("google", {"a": 1, "unit": "km"}), "argument 'unit'='km'"),
        "raises": (raw_tool_call("boom", {"x": 1}), "boom raised RuntimeError: disk on fire"),
        "never returns": (raw_tool_call("slow", {"seconds": 5}), "slow did not return within 0.2s"),
        "array args": (raw_tool_call("google", "[1]"), "arguments must be a JSON object"),
    }
    for label, (bad, expected) in cases.items():
        [reply], state = await respond(env, [bad])
        assert reply["role"] == "tool" and reply["tool_call_id"] == "c1", label
        assert reply["content"].startswith("Error: ") and expected in reply["content"], (label, reply["content"])
        assert state["tool_errors"] == 1 and state["tool_calls"] == 1, label


async def test_good_calls_convert_arguments_and_results():
    env = env_with(google, numpy)
    replies, state = await respond(env, [raw_tool_call("google", {"a": "3", "unit": "cm"}, "a"), raw_tool_call("numpy", {"point": {"x": 1, "y": 2}, "scale": 2}, "b")])
    assert [r["content"] for r in replies] == ["3cm", '{"x": 2.0, "y": 4.0}']  # non-strings become JSON
    assert [r["tool_call_id"] for r in replies] == ["a", "b"]
    assert state.get("tool_errors", 0) == 0 and state["calls"] == {"google": 1, "numpy": 1}


async def test_calls_of_one_turn_run_concurrently_and_are_capped():
    env = env_with(slow, max_calls_per_turn=4)
    started = time.perf_counter()
    replies, state = await respond(env, [raw_tool_call("slow", {"seconds": 0.3}, f"c{i}") for i in range(100)])
    assert time.perf_counter() - started < 1.0  # 4 calls of 0.3 s each, at once
    assert [r["content"] for r in replies[:4]] == ["slept"] * 4
    assert all("too many tool calls in one turn" in r["content"] for r in replies[4:])
    assert len(replies) == 100 and state["tool_errors"] == 96


def calculator_reply(request) -> dict | str:
    """Calls the calculator on the question, then answers with the tool's result."""
    messages = request["messages"]
    if messages[-1]["role"] == "tool":
        return f"<answer>{messages[-1]['content']}</answer>"
    a, b, c = re.findall(r"\d+", messages[-1]["content"])
    return {"content": None, "tool_calls": [tool_call("calculate", {"expression": f"{a} * {b} + {c}"})]}


async def test_calculator_end_to_end_over_http():
    env = lmgym.load_environment("calculator", num_examples=3, num_eval_examples=3)
    assert env.tools[0]["function"]["name"] == "calculate"
    with ScriptedServer(reply=calculator_reply) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "scripted", env.eval_dataset[0])
        await client.aclose()
    await env.score_group([rollout])
    assert rollout.error is None and len(rollout.turns) == 2
    assert server.requests[0]["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    assert rollout.reward == pytest.approx(1.2)
    assert rollout.metrics["tool_calls"] == 1 and rollout.metrics["calls_calculate"] == 1 and rollout.metrics["tool_errors"] == 0
    assert rollout.state["stop_reason"] == "done"


def test_calculator_refuses_what_is_not_arithmetic():
    calculate = lmgym.load_environment("calculator", num_examples=1, num_eval_examples=1).toolbox["calculate"].func
    assert calculate("(12 + 3) * 4") == "60" and calculate("7 / 2") == "3.5"
    for bad in ("__import__('os')", "2 ** 1000", "x + 1"):
        with pytest.raises(ValueError):
            calculate(bad)


class Ledger:
    """A per-rollout resource: what a StatefulToolEnv injects and tears down."""

    def __init__(self):
        self.entries: list[int] = []
        self.closed = False


def deposit(amount: int, ledger: Ledger) -> str:
    """Add money to the account.

    Args:
        amount: how much to add.
    """
    ledger.entries.append(amount)
    return f"balance {sum(ledger.entries)}"


class LedgerEnv(StatefulToolEnv):
    def __init__(self, **kwargs):
        super().__init__(eval_dataset=[{"question": "q"}], tools=[deposit], hidden_args=["ledger"], **kwargs)
        self.torn_down: list[Ledger] = []
        self.events: list[str] = []

    async def setup_state(self, state, example):
        state["ledger"] = Ledger()

    async def teardown_state(self, state):
        state["ledger"].closed = True
        self.torn_down.append(state["ledger"])

    async def start(self):
        self.events.append("start")

    async def stop(self):
        self.events.append("stop")


def test_hidden_arguments_are_not_in_the_schema():
    function = LedgerEnv().tools[0]["function"]
    assert list(function["parameters"]["properties"]) == ["amount"]
    assert function["parameters"]["required"] == ["amount"]


async def test_hidden_arguments_come_from_state_and_cannot_be_forged():
    env = LedgerEnv()
    state = {"ledger": Ledger()}
    messages = [{"role": "assistant", "content": None, "tool_calls": [raw_tool_call("deposit", {"amount": 5}), raw_tool_call("deposit", {"amount": 1, "ledger": "x"}, "c2")]}]
    good, forged = await env.env_response(messages, state)
    assert good["content"] == "balance 5" and state["ledger"].entries == [5]
    assert forged["content"].startswith("Error: unknown argument(s) ['ledger']")


async def test_missing_state_is_the_environments_error_not_the_models():
    env = LedgerEnv()
    env.setup_state = lambda state, example: asyncio.sleep(0)  # forgets to open the ledger
    with ScriptedServer(reply=lambda request: {"content": None, "tool_calls": [tool_call("deposit", {"amount": 1})]}) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "scripted", env.eval_dataset[0])
        await client.aclose()
    assert rollout.error is not None and "state has no 'ledger'" in rollout.error.message


def deposit_then_answer(request) -> dict | str:
    if request["messages"][-1]["role"] == "tool":
        return "done"
    return {"content": None, "tool_calls": [tool_call("deposit", {"amount": 7})]}


async def test_stateful_rollouts_get_their_own_resource_torn_down_however_they_end(tmp_path):
    env = LedgerEnv()
    with ScriptedServer(reply=deposit_then_answer) as server:
        client = OpenAIClient(server.base_url, max_retries=0)
        rollouts = await asyncio.gather(*(env.rollout(client, "scripted", env.eval_dataset[0], index=i) for i in range(3)))
        server.fail_next(400)  # a non-retried model error ends the fourth rollout early
        failed = await env.rollout(client, "scripted", env.eval_dataset[0], index=3)
        await client.aclose()
    assert all(r.error is None for r in rollouts) and failed.error is not None
    assert [ledger.entries for ledger in env.torn_down] == [[7], [7], [7], []]
    assert all(ledger.closed for ledger in env.torn_down)


async def test_eval_runner_starts_and_stops_the_environment_once(tmp_path):
    from lmgym.eval.runner import run_eval

    env = LedgerEnv()
    with ScriptedServer(reply=deposit_then_answer) as server:
        client = OpenAIClient(server.base_url)
        summary = await run_eval(env, client, model="scripted", examples=env.eval_dataset, rollouts_per_example=4, concurrency=2, run_dir=tmp_path)
        await client.aclose()
    assert env.events == ["start", "stop"] and len(env.torn_down) == 4
    assert summary.rollouts == 4 and summary.rewards == [0.0] * 4
