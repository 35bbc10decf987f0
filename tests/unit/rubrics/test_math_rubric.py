"""MathRubric: answers from \\boxed{} or a parser field, compared in worker processes
that are killed when a comparison outlasts its time limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from lmgym import Parser, Rollout, Turn, XMLParser
from lmgym.rubrics.math_rubric import MathRubric, VerifyPool, extract_answer, last_boxed
from lmgym.types import Example


def slow_when_asked(prediction, gold):
    """A comparison that never ends for the prediction "slow" (runs in a worker process)."""
    if prediction == "slow":
        time.sleep(600)
    return prediction == gold


@pytest.mark.parametrize("text, expected", [
    ("so \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{{a}{b}}", "{a}{b}"),
    ("\\fbox{7}", "7"),
    ("\\boxed{unbalanced", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_answers_come_from_the_parser_field_then_its_box():
    xml = XMLParser(["answer"])
    assert extract_answer([{"role": "assistant", "content": "<answer>\\boxed{3}</answer>"}], xml) == "3"
    assert extract_answer([{"role": "assistant", "content": "<answer>3/4</answer>"}], xml) == "3/4"
    assert extract_answer([{"role": "assistant", "content": "no tags"}], xml) is None
    assert extract_answer([{"role": "assistant", "content": "Thus \\boxed{x+1}."}], Parser()) == "x+1"


def rollout(reply: str, answer: str) -> Rollout:
    return Rollout(example=Example(id=0, prompt=[{"role": "user", "content": "q"}], answer=answer), turns=[Turn({"role": "assistant", "content": reply})])


async def test_math_rubric_scores_equivalent_forms():
    rubric = MathRubric(Parser())
    rollouts = [rollout("\\boxed{\\frac{1}{2}}", "0.5"), rollout("It is \\boxed{0.5}", "1/2"), rollout("\\boxed{3}", "0.5")]
    await rubric.score_group(rollouts)
    assert [r.metrics["math_correct"] for r in rollouts] == [1.0, 1.0, 0.0]
    assert [r.metrics["math_timeout"] for r in rollouts] == [0.0, 0.0, 0.0]


async def test_a_stuck_comparison_is_killed_scored_zero_and_counted():
    rubric = MathRubric(Parser())
    rubric.pool = VerifyPool(max_workers=2, timeout_s=1.0, compare=slow_when_asked)
    rollouts = [rollout("slow", "1"), rollout("1", "1"), rollout("2", "1"), rollout("1", "1")]
    started = time.perf_counter()
    await asyncio.wait_for(rubric.score_group(rollouts), 60)
    assert time.perf_counter() - started < 30
    assert [r.metrics["math_correct"] for r in rollouts] == [0.0, 1.0, 0.0, 1.0]
    assert [r.metrics["math_timeout"] for r in rollouts] == [1.0, 0.0, 0.0, 0.0]
    assert all(r.error is None for r in rollouts)
    # the pool is rebuilt after the kill and keeps working
    assert await rubric.pool.equal("5", "5") is True
    rubric.pool.close()


async def test_an_unparseable_reference_is_an_error_not_a_zero():
    rubric = MathRubric(Parser())
    bad = rollout("\\boxed{1}", "")
    await rubric.score_group([bad])
    assert bad.error is not None and "cannot parse the gold answer" in bad.error.message
