"""The bundled word-problems environment.

It is loaded by name through the registry, checked for determinism, split hygiene and
argument validation, scored by hand, and run end to end against a scripted server that
solves its task (the checks it shares with arithmetic and reverse-text are in
tests/bundled_checks.py).
"""

import re
from fractions import Fraction

import pytest
from bundled_checks import (
    COMMON_BAD_ARGUMENTS,
    check_end_to_end_rollouts_score_full_marks,
    check_eval_split_never_overlaps_train,
    check_loads_by_name_with_parser_rubric_and_sampling,
    check_package_metadata_matches_module,
    example_with,
    load,
    module_of,
    rows,
    score,
)

import lmgym
from lmgym import OpenAIClient
from lmgym.rubrics.math import math_equal
from lmgym.testing import ScriptedServer, last_user_text

NAME = "word-problems"
METRIC = "math_correct"


# --- common to the bundled single-turn environments ----------------------------------------


def test_loads_by_name_with_parser_rubric_and_sampling():
    check_loads_by_name_with_parser_rubric_and_sampling(NAME, METRIC)


def test_default_sizes():
    env = load(NAME)
    assert len(env.dataset) == 200 and len(env.eval_dataset) == 100


def test_package_metadata_matches_module():
    check_package_metadata_matches_module(NAME)


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = load(NAME, seed=3), load(NAME, seed=3), load(NAME, seed=4)
    assert rows(a.dataset) == rows(b.dataset) and rows(a.eval_dataset) == rows(b.eval_dataset)
    assert rows(a.dataset) != rows(c.dataset) and rows(a.eval_dataset) != rows(c.eval_dataset)


def test_eval_split_never_overlaps_train():
    check_eval_split_never_overlaps_train(NAME)


def test_eval_split_does_not_depend_on_train_size():
    assert rows(load(NAME, num_examples=1).eval_dataset) == rows(load(NAME, num_examples=50).eval_dataset)


def test_no_eval_examples():
    env = load(NAME, num_examples=2, num_eval_examples=0)
    assert env.eval_dataset is None and len(env.get_eval_examples()) == 2


@pytest.mark.parametrize("args, message", COMMON_BAD_ARGUMENTS)
def test_bad_arguments_are_rejected_naming_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        load(NAME, **args)


def test_unknown_argument_is_a_usage_error():
    with pytest.raises(lmgym.LmgymError, match="bad arguments"):
        load(NAME, no_such_argument=1)


# --- word-problems ---------------------------------------------------------------------------


def solve_word_problem(question):
    """An independent solver of every template, from the numbers in the question."""
    n = [int(x) for x in re.findall(r"\d+", question)]
    if "notebooks" in question:
        return Fraction(n[4] - n[0] * n[1] - n[2] * n[3])
    if "drives at" in question:
        return Fraction(n[0] * n[1] + n[2] * n[3])
    if "cookies" in question:
        assert (n[0] * n[1] - n[2]) % n[3] == 0, "shares must come out exact"
        return Fraction(n[0] * n[1] - n[2], n[3])
    if "years older" in question:
        return Fraction((n[0] + n[2]) + (2 * n[0] + n[1] + n[2]))
    if "ribbon" in question:
        return Fraction(n[0], n[1]) * n[2]
    if "on sale" in question:
        return Fraction(n[0]) * (100 - n[1]) / 100 * n[2]
    if "tank" in question:
        return Fraction(n[0] - n[1], n[2])
    raise AssertionError(f"unknown template: {question}")


def test_word_problem_answers_are_right_and_exact():
    env = load("word-problems")
    templates = set()
    for example in env.dataset + env.eval_dataset:
        value = solve_word_problem(example.prompt[-1]["content"])
        assert value > 0
        assert Fraction(example.answer) == value  # stored exactly: "12", "2.5" or "7/3"
        templates.add(example.info["template"])
    assert len(templates) >= 5


def test_word_problem_exact_formatting():
    exact = module_of("word-problems").exact
    assert exact(Fraction(12)) == "12"
    assert exact(Fraction(5, 2)) == "2.5"
    assert exact(Fraction(3, 8)) == "0.375"
    assert exact(Fraction(7, 3)) == "7/3"
    assert exact(Fraction(11, 6)) == "11/6"


@pytest.mark.parametrize(
    "answer, reply, correct, formatted",
    [
        ("12", "<answer>12</answer>", 1.0, 1.0),
        ("12", "<answer>\\boxed{12}</answer>", 1.0, 1.0),
        ("12", "<answer>12.0</answer>", 1.0, 1.0),
        ("12", "<answer>$12$</answer>", 1.0, 1.0),
        ("0.75", "<answer>\\frac{3}{4}</answer>", 1.0, 1.0),
        ("0.75", "<answer>3/4</answer>", 1.0, 1.0),
        ("7/3", "<answer>\\frac{7}{3}</answer>", 1.0, 1.0),
        ("12", "<answer>13</answer>", 0.0, 1.0),
        ("0.75", "<answer>0.7</answer>", 0.0, 1.0),
        ("12", "<answer>12 or 13</answer>", 0.0, 1.0),
        ("12", "<answer>10^{10^{10}}</answer>", 0.0, 1.0),
        ("12", "The answer is <answer>12</answer>", 1.0, 0.0),
        ("12", "12", 0.0, 0.0),
        ("12", "<answer>12", 0.0, 0.0),
        ("12", None, 0.0, 0.0),
    ],
)
async def test_word_problems_scored_by_hand(answer, reply, correct, formatted):
    env = load("word-problems", num_examples=1)
    rollout = await score(env, example_with(answer), reply)
    assert rollout.metrics == {"math_correct": correct, "format_reward": formatted, "math_timeout": 0.0}
    assert rollout.reward == pytest.approx(correct + 0.2 * formatted)


# --- end to end through a real HTTP server --------------------------------------------------


def reply_word_problem(request):
    value = solve_word_problem(last_user_text(request))
    return f"<answer>{value.numerator}/{value.denominator}</answer>"  # a form math-verify must equate


async def test_end_to_end_rollouts_score_full_marks():
    await check_end_to_end_rollouts_score_full_marks(NAME, METRIC, reply_word_problem)


async def test_end_to_end_wrong_model_scores_format_only():
    env = load("word-problems", num_examples=3)
    with ScriptedServer(reply="<answer>-1</answer>") as server:
        client = OpenAIClient(server.base_url, max_retries=0)
        try:
            rollouts = [await env.rollout(client, "scripted", example) for example in env.dataset]
        finally:
            await client.aclose()
    await env.score_group(rollouts)
    assert [r.reward for r in rollouts] == pytest.approx([0.2] * 3)
    assert not any(math_equal("-1", r.example.answer) for r in rollouts)
