"""mbpp on its fixture (three tasks written for lmgym in google-research-datasets/mbpp's
columns): loaded by argument and by folder, graded by running the setup code, the reply's
code and the asserts in lmgym's sandbox, and run end to end against a scripted model."""

import asyncio

from benchmark_checks import check_loads_its_fixture_both_ways, load_fixture, rewards
from bundled_checks import check_package_metadata_matches_module
from scripted import rollout_on

from lmgym.testing import ScriptedServer


def block(code: str) -> str:
    return f"Here is the function:\n```python\n{code}\n```"


def test_loads_its_fixture_with_the_tests_in_the_prompt(monkeypatch):
    env = check_loads_its_fixture_both_ways("mbpp", monkeypatch, rows=3)
    text = env.eval_dataset[2].prompt[-1]["content"]
    assert text.startswith("You are an expert Python programmer, and here is your task: Write a function to find the largest gap")
    assert text.endswith("Your code should pass these tests:\n\nassert largest_gap([1, 10, 4]) == 6\n"
                         "assert largest_gap(OFFSETS) == 5\nassert largest_gap([3, 3]) == 0")
    assert env.eval_dataset[2].info["setup"] == "OFFSETS = [0, 5, 7]" and env.eval_dataset[0].info["setup"] == ""


def test_package_metadata_matches_module():
    check_package_metadata_matches_module("mbpp")


async def test_the_reference_solutions_pass_with_their_setup_code():
    env = load_fixture("mbpp")
    scores = [await rewards(env, [block(e.answer)], example_index=i) for i, e in enumerate(env.eval_dataset)]
    assert scores == [[1.0]] * 3  # the third needs its test_setup_code


async def test_wrong_unparseable_and_endless_code_score_zero():
    env = load_fixture("mbpp", timeout_s=2.0)
    replies = [
        block("def sum_of_squares(numbers):\n    return sum(numbers)"),           # one assert fails
        block("def sum_squares(numbers):\n    return sum(n * n for n in numbers)"),  # another name
        "I would add up the squares.",                                           # prose, no code
        block("def sum_of_squares(numbers):\n    while True:\n        pass"),      # runs past the limit
        "def sum_of_squares(numbers):\n    return sum(n * n for n in numbers)",    # no block: the reply is the code
    ]
    assert await rewards(env, replies) == [0.0, 0.0, 0.0, 0.0, 1.0]


async def test_scripted_rollouts_record_why_each_failed():
    env = load_fixture("mbpp", timeout_s=2.0)
    example = env.eval_dataset[1]
    replies = iter([block(example.answer), block("def count_vowels(text):\n    return len(text)"), "no code"])
    with ScriptedServer(reply=lambda request: next(replies)) as server:
        rollouts = [await asyncio.wait_for(rollout_on(server.base_url, env, example, index=i), 60) for i in range(3)]
    assert [r.reward for r in rollouts] == [1.0, 0.0, 0.0]
    results = [r.state["check"]["result"] for r in rollouts]
    assert results[0] == "passed"
    assert results[1] == "failed: AssertionError" and results[2].startswith("failed: SyntaxError")
