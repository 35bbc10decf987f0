"""Property tests: whatever tool calls a model emits, every call gets exactly one tool
message (its result or a precise "Error: ..."), and nothing escapes to end the rollout."""

from __future__ import annotations

import asyncio
import json
from typing import Literal, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmgym.envs.tools import ToolEnv


def scale(a: int, unit: Literal["cm", "m"] = "m", tags: Optional[list[str]] = None) -> str:
    """Scale a length.

    Args:
        a: the length.
        unit: its unit.
        tags: labels.
    """
    return f"{a * 2}{unit}"


ENV = ToolEnv(eval_dataset=[{"question": "q"}], tools=[scale], tool_timeout=1.0)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
argument_objects = st.fixed_dictionaries(
    {},
    optional={"a": json_values | st.integers(), "unit": st.sampled_from(["cm", "m", "km", 3]), "tags": json_values, "extra": json_values},
)
argument_texts = st.one_of(
    st.text(max_size=60),
    json_values.map(json.dumps),
    argument_objects.map(json.dumps),
    argument_objects.map(lambda o: json.dumps(o)[:-1]),  # truncated JSON, as a model cut off by max_tokens writes it
)
names = st.one_of(st.just("scale"), st.text(max_size=12), st.none(), st.integers())
functions = st.one_of(
    st.fixed_dictionaries({"name": names, "arguments": argument_texts | json_values}),
    st.fixed_dictionaries({}, optional={"name": names, "arguments": argument_texts}),
    json_values,  # not even an object
)
calls = st.fixed_dictionaries({"id": st.text(max_size=8), "type": st.just("function"), "function": functions})


def respond(tool_calls: list) -> tuple[list[dict], dict]:
    state: dict = {}
    messages = [{"role": "assistant", "content": None, "tool_calls": tool_calls}]
    return asyncio.run(ENV.env_response(messages, state)), state


@FUZZ
@given(st.lists(calls, min_size=1, max_size=5))
def test_every_call_gets_one_tool_message(tool_calls):
    replies, state = respond(tool_calls)
    assert len(replies) == len(tool_calls)
    for call, reply in zip(tool_calls, replies):
        assert reply["role"] == "tool" and reply["tool_call_id"] == call["id"]
        assert isinstance(reply["content"], str) and reply["content"]
    errors = sum(r["content"].startswith("Error: ") for r in replies)
    assert state["tool_calls"] == len(tool_calls) and state.get("tool_errors", 0) == errors


@FUZZ
@given(json_values.filter(lambda v: v not in (None, [], "", 0, False, {})))
def test_tool_calls_that_are_not_a_list_of_objects_are_answered_too(tool_calls):
    replies, state = respond(tool_calls)
    assert replies and all(r["role"] == "tool" and r["content"].startswith("Error: ") for r in replies)
    assert state["tool_errors"] == len(replies)


@FUZZ
@given(st.integers(-10**6, 10**6), st.sampled_from(["cm", "m"]))
def test_valid_calls_always_run(a, unit):
    [reply], state = respond([{"id": "x", "type": "function", "function": {"name": "scale", "arguments": json.dumps({"a": a, "unit": unit})}}])
    assert reply["content"] == f"{a * 2}{unit}" and state.get("tool_errors", 0) == 0


@FUZZ
@given(argument_texts)
def test_invalid_arguments_are_errors_that_say_why(text):
    [reply], _ = respond([{"id": "x", "type": "function", "function": {"name": "scale", "arguments": text}}])
    try:
        parsed = json.loads(text or "{}")
    except json.JSONDecodeError:
        assert reply["content"].startswith("Error: arguments are not valid JSON")
        return
    if not isinstance(parsed, dict):
        assert reply["content"].startswith("Error: arguments must be a JSON object")
    elif not reply["content"].startswith("Error: "):
        assert reply["content"].endswith(("cm", "m"))  # a valid call ran
