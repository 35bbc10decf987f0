"""stockroom: over real HTTP, an agent that reads both counts and writes the right ones earns
the full reward and one that guesses a count does not; the tools refuse what the stock does
not hold; the noisy teacher's episodes are right exactly when they neither skip nor slip."""

from __future__ import annotations

import inspect
import json
import random

import pytest
from scripted import run_scripted

import lmgym
from lmgym.registry import available_environments
from lmgym.testing import tool_call


@pytest.fixture(scope="module")
def sr():
    """The environment's module, for its helpers."""
    return inspect.getmodule(available_environments()["stockroom"].load())


def tool_results(request) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


def careful_agent(guess_target: int | None = None):
    """Reads the source (and the target unless `guess_target` is given), writes both, says done;
    it learns the task from the user message as a model would."""
    def reply(request):
        words = next(m["content"] for m in request["messages"] if m["role"] == "user").split()
        amount, item, source, target = int(words[1]), words[2], words[5], words[9]
        seen = tool_results(request)
        plan = [("check_stock", {"warehouse": source, "item": item})]
        if guess_target is None:
            plan.append(("check_stock", {"warehouse": target, "item": item}))
        if len(seen) >= len(plan):
            target_count = guess_target if guess_target is not None else int(seen[1])
            plan += [("set_stock", {"warehouse": source, "item": item, "count": int(seen[0]) - amount}),
                     ("set_stock", {"warehouse": target, "item": item, "count": target_count + amount})]
        if len(seen) < len(plan):
            name, args = plan[len(seen)]
            return {"content": None, "tool_calls": [tool_call(name, args, f"call_{len(seen)}")]}
        return "<answer>done</answer>"
    return reply


async def test_reading_both_counts_and_writing_the_right_ones_earns_the_reward():
    env = lmgym.load_environment("stockroom", num_examples=4, num_eval_examples=2)
    rollout, server = await run_scripted(env, careful_agent())
    calls = [c["function"]["name"] for t in rollout.completion if t.get("tool_calls") for c in t["tool_calls"]]
    assert rollout.error is None and calls == ["check_stock", "check_stock", "set_stock", "set_stock"]
    assert rollout.metrics["stock_correct"] == 1.0 and rollout.reward == pytest.approx(1.1)
    assert not any("stock" in t["function"]["parameters"]["properties"] for t in server.requests[0]["tools"])


async def test_guessing_the_destination_count_earns_no_stock_reward():
    env = lmgym.load_environment("stockroom", num_examples=4, num_eval_examples=2)
    example = env.eval_dataset[0]
    rollout, _ = await run_scripted(env, careful_agent(guess_target=example.info["target_count"] + 3), example)
    assert rollout.error is None and rollout.metrics["stock_correct"] == 0.0


def test_the_tools_refuse_what_the_stock_does_not_hold(sr):
    stock = {"north": {"bolts": 12}, "south": {"bolts": 30}}
    assert sr.check_stock("south", "bolts", stock) == "30"
    with pytest.raises(ValueError, match="no warehouse named 'east'"):
        sr.check_stock("east", "bolts", stock)
    with pytest.raises(ValueError, match="does not stock 'nails'"):
        sr.set_stock("north", "nails", 3, stock)
    with pytest.raises(ValueError, match="negative"):
        sr.set_stock("north", "bolts", -1, stock)
    assert sr.set_stock("north", "bolts", 5, stock) == "north now holds 5 bolts" and stock["north"]["bolts"] == 5


def replay(sr, row: dict, completion: list[dict]) -> dict:
    """The stock after the teacher's calls, executed by the environment's own tools."""
    stock = sr.starting_stock(row)
    tools = {"check_stock": sr.check_stock, "set_stock": sr.set_stock}
    for message in completion:
        for call in message.get("tool_calls") or []:
            tools[call["function"]["name"]](**json.loads(call["function"]["arguments"]), stock=stock)
    return stock


def test_teacher_episodes_are_right_exactly_when_they_neither_skip_nor_slip(sr):
    rows, _ = sr.train_and_eval(sr.make_task, 200, 0, 0)
    perfect = sr.sft_examples(200, skip=0.0, slip=0.0)
    for row, example in zip(rows, perfect):
        assert sum(len(m.get("tool_calls") or []) for m in example["completion"]) == 4
        assert replay(sr, row, example["completion"]) == sr.expected_stock(row)
        assert example["completion"][-1] == {"role": "assistant", "content": "<answer>done</answer>"}
    noisy = sr.sft_examples(200, skip=0.3, slip=0.2)
    right = sum(replay(sr, row, ex["completion"]) == sr.expected_stock(row) for row, ex in zip(rows, noisy))
    assert 0.4 * 200 < right < 0.75 * 200  # about 0.7 * 0.8 = 56% are right (a guessed count can hit by chance)
    with pytest.raises(ValueError, match="skip must be between 0 and 1"):
        sr.sft_examples(2, skip=1.5)


def test_tasks_never_move_more_than_the_source_holds(sr):
    rng = random.Random(3)
    for index in range(500):
        task = sr.make_task(rng, index)
        assert task["amount"] <= task["source_count"] and task["source"] != task["target"]
