"""The bundled environments: arithmetic, reverse-text, word-problems.

Each is loaded by name through the registry, checked for determinism, split hygiene and
argument validation, scored by hand, and run end to end against a scripted server that
solves its task.
"""

import inspect
import re
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest

import lmgym
from lmgym import OpenAIClient, SingleTurnEnv
from lmgym.registry import BUNDLED_DIR, available_environments, describe
from lmgym.rubrics.math import math_equal
from lmgym.testing import ScriptedServer, last_user_text
from lmgym.types import Example, Rollout, Turn

ENVS = {"arithmetic": "correct_answer", "reverse-text": "lcs_ratio", "word-problems": "math_correct"}


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


# --- common to all three ------------------------------------------------------------------


@pytest.mark.parametrize("name", ENVS)
def test_loads_by_name_with_parser_rubric_and_sampling(name):
    env = load(name, num_examples=5, num_eval_examples=3)
    assert isinstance(env, SingleTurnEnv)
    assert len(env.dataset) == 5 and len(env.eval_dataset) == 3
    for example in env.dataset + env.eval_dataset:
        system, user = example.prompt
        assert system["role"] == "system" and "<answer>" in system["content"]
        assert user["role"] == "user" and user["content"]
        assert isinstance(example.answer, str) and example.answer
    assert isinstance(env.parser, lmgym.XMLParser) and env.rubric.parser is env.parser
    assert env.rubric.names[:2] == [ENVS[name], "format_reward"]
    assert env.rubric.weights[:2] == [1.0, 0.2]
    assert env.rubric.weights[2:] == [0.0] * (len(env.rubric.weights) - 2)  # metrics only (math_timeout)
    assert env.sampling_args["temperature"] == 0.7
    assert 32 <= env.sampling_args["max_tokens"] <= 256
    assert env.max_turns == 1


@pytest.mark.parametrize("name", ENVS)
def test_default_sizes(name):
    env = load(name)
    assert len(env.dataset) == 200 and len(env.eval_dataset) == 100


@pytest.mark.parametrize("name", ENVS)
def test_package_metadata_matches_module(name):
    module = name.replace("-", "_")
    folder = BUNDLED_DIR / module
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lmgym.environments"] == {name: f"{module}:load_environment"}
    assert project["tool"]["setuptools"]["py-modules"] == [module]
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    summary = describe(available_environments()[name])
    assert summary and summary.rstrip(".") == project["project"]["description"]
    assert 25 <= len(Path(folder / f"{module}.py").read_text().splitlines()) <= 150


@pytest.mark.parametrize("name", ENVS)
def test_same_seed_same_data_other_seed_other_data(name):
    a, b, c = load(name, seed=3), load(name, seed=3), load(name, seed=4)
    assert rows(a.dataset) == rows(b.dataset) and rows(a.eval_dataset) == rows(b.eval_dataset)
    assert rows(a.dataset) != rows(c.dataset) and rows(a.eval_dataset) != rows(c.eval_dataset)


@pytest.mark.parametrize("name", ENVS)
def test_eval_split_never_overlaps_train(name):
    envs = [load(name, seed=seed) for seed in (0, 1)]
    train = {q for env in envs for q in questions(env.dataset)}
    evals = {q for env in envs for q in questions(env.eval_dataset)}
    assert not train & evals  # even across seeds: the split is a function of the question


@pytest.mark.parametrize("name", ENVS)
def test_eval_split_does_not_depend_on_train_size(name):
    assert rows(load(name, num_examples=1).eval_dataset) == rows(load(name, num_examples=50).eval_dataset)


@pytest.mark.parametrize("name", ENVS)
def test_no_eval_examples(name):
    env = load(name, num_examples=2, num_eval_examples=0)
    assert env.eval_dataset is None and len(env.get_eval_examples()) == 2


@pytest.mark.parametrize(
    "name, args, message",
    [
        (name, args, message)
        for name in ENVS
        for args, message in [
            ({"num_examples": 0}, "num_examples must be at least 1"),
            ({"num_eval_examples": -1}, "num_eval_examples must be at least 0"),
        ]
    ]
    + [
        ("arithmetic", {"min_operands": 1}, "min_operands must be at least 2"),
        ("arithmetic", {"min_operands": 3, "max_operands": 2}, "max_operands .* min_operands"),
        ("arithmetic", {"max_value": 0}, "max_value must be at least 1"),
        ("arithmetic", {"operators": ""}, "operators must be"),
        ("arithmetic", {"operators": "+/"}, "operators must be"),
        ("arithmetic", {"max_value": 1, "operators": "+", "num_eval_examples": 5}, "too few eval questions"),
        ("reverse-text", {"min_words": 0}, "min_words must be at least 1"),
        ("reverse-text", {"min_words": 4, "max_words": 3}, "max_words .* min_words"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(name, args, message):
    with pytest.raises(ValueError, match=message):
        load(name, **args)


@pytest.mark.parametrize("name", ENVS)
def test_unknown_argument_is_a_usage_error(name):
    with pytest.raises(lmgym.LmgymError, match="bad arguments"):
        load(name, no_such_argument=1)


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


# --- reverse-text -----------------------------------------------------------------------------


def test_reverse_text_lcs():
    lcs_length = module_of("reverse-text").lcs_length
    assert lcs_length("", "abc") == 0 and lcs_length("abc", "") == 0
    assert lcs_length("abc", "abc") == 3
    assert lcs_length("abcde", "ace") == 3
    assert lcs_length("AGGTAB", "GXTXAYB") == 4
    assert lcs_length("abc", "xyz") == 0


def test_reverse_text_data():
    module = module_of("reverse-text")
    env = load("reverse-text", num_examples=100, min_words=2, max_words=4)
    counts = set()
    for example in env.dataset + env.eval_dataset:
        text = example.prompt[-1]["content"].split("\n")[-1]
        assert example.answer == text[::-1]
        words = text.split(" ")
        counts.add(len(words))
        assert all(w in module.WORDS for w in words)
    assert counts == {2, 3, 4}


@pytest.mark.parametrize(
    "reply, correct, formatted",
    [
        ("<answer>tac der</answer>", 1.0, 1.0),
        ("<answer>\ntac der\n</answer>", 1.0, 1.0),
        ("<answer>tac de</answer>", 2 * 6 / 13, 1.0),  # one character dropped
        ("<answer>red cat</answer>", 2 * 1 / 14, 1.0),  # not reversed: the LCS is one character
        ("<answer>zzz</answer>", 0.0, 1.0),
        ("tac der", 0.0, 0.0),
        ("<answer>tac der", 0.0, 0.0),
        ("Sure! <answer>tac der</answer>", 1.0, 0.0),
        (None, 0.0, 0.0),
    ],
)
async def test_reverse_text_scored_by_hand(reply, correct, formatted):
    env = load("reverse-text", num_examples=1)
    rollout = await score(env, example_with("tac der"), reply)
    assert rollout.metrics["lcs_ratio"] == pytest.approx(correct)
    assert rollout.metrics["format_reward"] == formatted
    assert rollout.reward == pytest.approx(correct + 0.2 * formatted)


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


def reply_arithmetic(request):
    return f"<answer>{solve_arithmetic(last_user_text(request))}</answer>"


def reply_reverse_text(request):
    return f"<answer>{last_user_text(request).split(chr(10))[-1][::-1]}</answer>"


def reply_word_problem(request):
    value = solve_word_problem(last_user_text(request))
    return f"<answer>{value.numerator}/{value.denominator}</answer>"  # a form math-verify must equate


@pytest.mark.parametrize(
    "name, reply",
    [("arithmetic", reply_arithmetic), ("reverse-text", reply_reverse_text), ("word-problems", reply_word_problem)],
)
async def test_end_to_end_rollouts_score_full_marks(name, reply):
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
        assert {k: v for k, v in rollout.metrics.items() if k != "math_timeout"} == {ENVS[name]: 1.0, "format_reward": 1.0}
        assert rollout.reward == pytest.approx(1.2)
    request = server.requests[0]
    assert request["model"] == "scripted"
    assert request["temperature"] == 0.7 and request["max_tokens"] == env.sampling_args["max_tokens"]
    assert request["messages"] == examples[0].prompt


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
