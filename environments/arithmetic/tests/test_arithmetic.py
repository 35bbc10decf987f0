"""The bundled arithmetic environment.

It is loaded by name through the registry, checked for determinism, split hygiene and
argument validation, scored by hand, and run end to end against a scripted server that
solves its task (the checks it shares with reverse-text and word-problems are in
tests/bundled_checks.py).
"""

import re

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
    questions,
    rows,
    score,
)

import lmgym
from lmgym.testing import last_user_text

NAME = "arithmetic"
METRIC = "correct_answer"


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


@pytest.mark.parametrize(
    "args, message",
    COMMON_BAD_ARGUMENTS
    + [
        ({"min_operands": 1}, "min_operands must be at least 2"),
        ({"min_operands": 3, "max_operands": 2}, "max_operands .* min_operands"),
        ({"max_value": 0}, "max_value must be at least 1"),
        ({"operators": ""}, "operators must be"),
        ({"operators": "+/"}, "operators must be"),
        ({"max_value": 1, "operators": "+", "num_eval_examples": 5}, "too few eval questions"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        load(NAME, **args)


def test_unknown_argument_is_a_usage_error():
    with pytest.raises(lmgym.LmgymError, match="bad arguments"):
        load(NAME, no_such_argument=1)


# --- arithmetic -----------------------------------------------------------------------------

EXPRESSION = re.compile(r"What is ([\d +*-]+)\?")


def solve_arithmetic(question):
    expression = EXPRESSION.fullmatch(question).group(1)
    return eval(expression)  # only digits, spaces and + - *: Python's own precedence


def test_arithmetic_answers_follow_precedence_and_sizes():
    env = load("arithmetic", num_examples=300, min_operands=2, max_operands=5, max_value=20)
    counts = set()
    for example in env.dataset + env.eval_dataset:
        question = example.prompt[-1]["content"]
        assert example.answer == str(solve_arithmetic(question))
        numbers = [int(n) for n in re.findall(r"\d+", question)]
        counts.add(len(numbers))
        assert all(0 <= n <= 20 for n in numbers)
    assert counts == {2, 3, 4, 5}


def test_arithmetic_operators_argument():
    env = load("arithmetic", num_examples=30, operators="*")
    assert all(set(re.findall(r"[+*-]", q)) == {"*"} for q in questions(env.dataset))


def test_arithmetic_evaluate_helper():
    evaluate = module_of("arithmetic").evaluate
    assert evaluate([37, 5, 12], ["+", "*"]) == 97
    assert evaluate([2, 3, 4, 5], ["*", "-", "*"]) == -14
    assert evaluate([10, 3, 2], ["-", "-"]) == 5


@pytest.mark.parametrize(
    "reply, correct, formatted",
    [
        ("<answer>97</answer>", 1.0, 1.0),
        ("<answer>\n97\n</answer>", 1.0, 1.0),
        ("<answer> 9,7 </answer>", 1.0, 1.0),
        ("<answer>+97</answer>", 1.0, 1.0),
        ("<answer>98</answer>", 0.0, 1.0),
        ("<answer>97.0</answer>", 0.0, 1.0),
        ("<answer>ninety-seven</answer>", 0.0, 1.0),
        ("The answer is <answer>97</answer>", 1.0, 0.0),
        ("97", 0.0, 0.0),
        ("<answer>97", 0.0, 0.0),
        ("<answer>97</think>", 0.0, 0.0),
        (None, 0.0, 0.0),
    ],
)
async def test_arithmetic_scored_by_hand(reply, correct, formatted):
    env = load("arithmetic", num_examples=1)
    rollout = await score(env, example_with("97", "What is 37 + 5 * 12?"), reply)
    assert rollout.metrics == {"correct_answer": correct, "format_reward": formatted}
    assert rollout.reward == pytest.approx(correct + 0.2 * formatted)


async def test_arithmetic_negative_answers():
    env = load("arithmetic", num_examples=1)
    assert (await score(env, example_with("-41"), "<answer>-41</answer>")).reward == pytest.approx(1.2)
    assert (await score(env, example_with("-41"), "<answer>41</answer>")).reward == pytest.approx(0.2)


def test_arithmetic_offers_exact_warm_start_data_from_the_train_split():
    env = lmgym.load_environment("arithmetic", num_examples=20, num_eval_examples=20)
    rows = env.sft_examples(seed=3)
    assert len(rows) == 20
    eval_questions = {e.prompt[-1]["content"] for e in env.eval_dataset}
    for row in rows:
        question = row["prompt"][-1]["content"]
        assert question not in eval_questions
        reply = row["completion"][0]["content"]
        assert env.parser.format_reward(reply) == 1.0
        expression = question.removeprefix("What is ").removesuffix("?")
        assert int(env.parser.parse_answer(reply)) == eval(expression)  # Python's precedence


async def test_arithmetic_last_number_format_reads_the_last_integer():
    env = lmgym.load_environment("arithmetic", num_examples=5, answer_format="last-number")
    example = env.dataset[0]
    assert "End your reply with the integer result" in example.prompt[0]["content"]
    expression = example.prompt[-1]["content"].removeprefix("What is ").removesuffix("?")
    value = eval(expression)
    rollouts = []
    for reply in (f"{expression} = {value}", f"It is {value}. Check: {value + 1}", "no idea", f"{value:,} ", f"<answer>{value}</answer>"):
        rollout = lmgym.Rollout(example=example, turns=[lmgym.Turn({"role": "assistant", "content": reply})])
        rollouts.append(rollout)
    await env.rubric.score_group(rollouts)
    assert [r.reward for r in rollouts] == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert env.rubric.names == ["correct_answer"]
    with pytest.raises(ValueError, match="answer_format must be one of"):
        lmgym.load_environment("arithmetic", answer_format="json")


# --- end to end through a real HTTP server --------------------------------------------------


def reply_arithmetic(request):
    return f"<answer>{solve_arithmetic(last_user_text(request))}</answer>"


async def test_end_to_end_rollouts_score_full_marks():
    await check_end_to_end_rollouts_score_full_marks(NAME, METRIC, reply_arithmetic)
