"""What the tests of the bundled single-turn environments (arithmetic, reverse-text,
word-problems; environments/NAME/tests) check alike: each is loaded by name through the
registry, checked for determinism, split hygiene and argument validation, scored by hand,
and run end to end against a scripted server that solves its task.

A `check_*` function holds the assertions of a longer test for the environment it is
given; each environment's test of the same name calls it (the short ones are written out
in each file).
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest

import lmgym
from lmgym import OpenAIClient, SingleTurnEnv
from lmgym.registry import BUNDLED_DIR, available_environments, describe
from lmgym.testing import ScriptedServer
from lmgym.types import Example, Rollout, Turn

# Bad arguments every one of them rejects, with the message naming the argument.
COMMON_BAD_ARGUMENTS = [
    ({"num_examples": 0}, "num_examples must be at least 1"),
    ({"num_eval_examples": -1}, "num_eval_examples must be at least 0"),
]


def module_of(name):
    """The environment's module, for its helper functions."""
    return inspect.getmodule(available_environments()[name].load())


def load(name, **args):
    return lmgym.load_environment(name, **args)


def questions(examples):
    return [e.prompt[-1]["content"] for e in examples]


def rows(examples):
    return [(e.prompt[-1]["content"], e.answer) for e in examples]


async def score(env, example, reply):
    """Score one rollout whose only turn is `reply` (no turn at all when reply is None)."""
    turns = [] if reply is None else [Turn(assistant={"role": "assistant", "content": reply})]
    rollout = Rollout(example=example, turns=turns)
    await env.rubric.score_group([rollout])
    assert rollout.error is None, rollout.error
    return rollout


def example_with(answer, question="q"):
    return Example(id=0, prompt=[{"role": "user", "content": question}], answer=answer)


# --- the checks -----------------------------------------------------------------------------


def check_loads_by_name_with_parser_rubric_and_sampling(name, metric):
    env = load(name, num_examples=5, num_eval_examples=3)
    assert isinstance(env, SingleTurnEnv)
    assert len(env.dataset) == 5 and len(env.eval_dataset) == 3
    for example in env.dataset + env.eval_dataset:
        system, user = example.prompt
        assert system["role"] == "system" and "<answer>" in system["content"]
        assert user["role"] == "user" and user["content"]
        assert isinstance(example.answer, str) and example.answer
    assert isinstance(env.parser, lmgym.XMLParser) and env.rubric.parser is env.parser
    assert env.rubric.names[:2] == [metric, "format_reward"]
    assert env.rubric.weights[:2] == [1.0, 0.2]
    assert env.rubric.weights[2:] == [0.0] * (len(env.rubric.weights) - 2)  # metrics only (math_timeout)
    assert env.sampling_args["temperature"] == 0.7
    assert 32 <= env.sampling_args["max_tokens"] <= 256
    assert env.max_turns == 1


def check_package_metadata_matches_module(name):
    module = name.replace("-", "_")
    folder = BUNDLED_DIR / module
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lmgym.environments"] == {name: f"{module}:load_environment"}
    assert project["tool"]["setuptools"]["py-modules"] == [module]
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    summary = describe(available_environments()[name])
    assert summary and summary.rstrip(".") == project["project"]["description"]
    assert 25 <= len(Path(folder / f"{module}.py").read_text().splitlines()) <= 150


def check_eval_split_never_overlaps_train(name):
    envs = [load(name, seed=seed) for seed in (0, 1)]
    train = {q for env in envs for q in questions(env.dataset)}
    evals = {q for env in envs for q in questions(env.eval_dataset)}
    assert not train & evals  # even across seeds: the split is a function of the question


async def check_end_to_end_rollouts_score_full_marks(name, metric, reply):
    """Train and eval examples through a real HTTP server whose `reply` solves each one."""
    env = load(name, num_examples=8, num_eval_examples=4)
    examples = env.dataset + env.get_eval_examples()
    with ScriptedServer(reply=reply) as server:
        client = OpenAIClient(server.base_url, max_retries=0)
        try:
            rollouts = [await env.rollout(client, "scripted", example) for example in examples]
        finally:
            await client.aclose()
    for rollout in rollouts:
        await env.score_group([rollout])
        assert rollout.error is None, rollout.error
        assert rollout.state["stop_reason"] == "done" and len(rollout.turns) == 1
        assert {k: v for k, v in rollout.metrics.items() if k != "math_timeout"} == {metric: 1.0, "format_reward": 1.0}
        assert rollout.reward == pytest.approx(1.2)
    request = server.requests[0]
    assert request["model"] == "scripted"
    assert request["temperature"] == 0.7 and request["max_tokens"] == env.sampling_args["max_tokens"]
    assert request["messages"] == examples[0].prompt
