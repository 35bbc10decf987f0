"""Rubric: argument injection, weights, metrics, async and group functions, failures."""

from __future__ import annotations

import pytest

from lmgym import Example, Rollout, Rubric, Turn, group_reward
from lmgym.parsers import XMLParser


def make_rollout(reply: str, answer: str = "4", index: int = 0, **info) -> Rollout:
    example = Example(id=7, prompt=[{"role": "user", "content": "2+2?"}], answer=answer, info=info, task="math")
    return Rollout(example=example, index=index, turns=[Turn({"role": "assistant", "content": reply})])


async def test_injects_only_declared_arguments_and_weights():
    seen = {}

    def correct(completion, answer) -> float:
        seen["correct"] = (completion, answer)
        return float(completion[-1]["content"] == answer)

    async def brevity(completion, state, info, task, prompt, example_id) -> float:
        seen["brevity"] = (state, info, task, prompt, example_id)
        return 0.5

    rollout = make_rollout("4", difficulty="easy")
    await Rubric([correct, brevity], weights=[1.0, 0.4]).score_group([rollout])
    assert rollout.reward == pytest.approx(1.0 + 0.4 * 0.5)
    assert rollout.metrics == {"correct": 1.0, "brevity": 0.5}
    assert seen["correct"] == ([{"role": "assistant", "content": "4"}], "4")
    assert seen["brevity"][1:] == ({"difficulty": "easy"}, "math", [{"role": "user", "content": "2+2?"}], 7)


async def test_dataset_columns_and_parser_are_injectable():
    parser = XMLParser(["answer"])

    def uses_column(difficulty, parser) -> float:
        return 1.0 if difficulty == "hard" and isinstance(parser, XMLParser) else 0.0

    rollout = make_rollout("x", difficulty="hard")
    await Rubric([uses_column], parser=parser).score_group([rollout])
    assert rollout.reward == 1.0


async def test_raising_function_marks_rollout_errored_not_zero():
    def broken(completion) -> float:
        raise KeyError("boom")

    good, bad = make_rollout("4"), make_rollout("4")
    await Rubric([lambda completion: 1.0]).score_group([good])
    await Rubric([broken]).score_group([bad])
    assert good.reward == 1.0
    assert bad.reward is None and bad.error.kind == "reward"
    assert "broken" in bad.error.message and "KeyError" in bad.error.message


async def test_non_numeric_return_is_an_error():
    rollout = make_rollout("4")
    await Rubric([lambda completion: "yes"]).score_group([rollout])
    assert rollout.error.kind == "reward" and "not a number" in rollout.error.message


async def test_unknown_argument_is_an_error_naming_it():
    def wants(nonexistent) -> float:
        return 1.0

    rollout = make_rollout("4")
    await Rubric([wants]).score_group([rollout])
    assert "nonexistent" in rollout.error.message


async def test_group_functions_by_plural_names_and_decorator():
    def shortest(completions) -> list[float]:
        lengths = [len(c[-1]["content"]) for c in completions]
        return [1.0 if n == min(lengths) else 0.0 for n in lengths]

    @group_reward
    async def rank(completion, answer):  # singular names, but declared a group function
        return [float(i) for i in range(len(completion))]

    rollouts = [make_rollout("four!", index=0), make_rollout("4", index=1)]
    rubric = Rubric([shortest, rank], weights=[1.0, 0.5])
    assert rubric.has_group_functions
    await rubric.score_group(rollouts)
    assert [r.metrics for r in rollouts] == [{"shortest": 0.0, "rank": 0.0}, {"shortest": 1.0, "rank": 1.0}]
    assert [r.reward for r in rollouts] == [0.0, 1.5]


async def test_group_function_with_wrong_length_errors_every_rollout():
    def wrong(completions):
        return [1.0]

    rollouts = [make_rollout("a", index=0), make_rollout("b", index=1)]
    await Rubric([wrong]).score_group(rollouts)
    assert all(r.error is not None and "returned 1 scores for 2" in r.error.message for r in rollouts)


async def test_already_failed_rollouts_are_not_scored():
    from lmgym.types import RolloutError

    rollout = make_rollout("4")
    rollout.error = RolloutError("timeout", "slow")
    await Rubric([lambda completion: 1.0]).score_group([rollout])
    assert rollout.reward is None and rollout.error.kind == "timeout"


def test_weights_must_match_functions():
    with pytest.raises(ValueError, match="2 functions but 1 weights"):
        Rubric([lambda completion: 1.0, lambda answer: 1.0], weights=[1.0])
