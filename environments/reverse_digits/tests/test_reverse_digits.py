"""The bundled reverse-digits environment and its noisy-teacher SFT data."""

import inspect
import tomllib

import pytest

import lmgym
from lmgym import SingleTurnEnv
from lmgym.envs.procedural import split_of
from lmgym.errors import UsageError
from lmgym.registry import BUNDLED_DIR, available_environments, describe
from lmgym.types import Example, Rollout, Turn

NAME = "reverse-digits"


@pytest.fixture(scope="module")
def module():
    return inspect.getmodule(available_environments()[NAME].load())


def load(**args):
    return lmgym.load_environment(NAME, **args)


def rows(examples):
    return [(e.prompt[-1]["content"], e.answer) for e in examples]


async def score(env, answer, reply):
    """Reward and metrics of one rollout whose only reply is `reply` (no turn when None)."""
    example = Example(id=0, prompt=[{"role": "user", "content": answer[::-1]}], answer=answer)
    turns = [] if reply is None else [Turn(assistant={"role": "assistant", "content": reply})]
    rollout = Rollout(example=example, turns=turns)
    await env.rubric.score_group([rollout])
    assert rollout.error is None, rollout.error
    return rollout


def test_loads_by_name_with_digits_only_prompts():
    env = load(num_examples=50, num_eval_examples=20)
    assert isinstance(env, SingleTurnEnv) and env.max_turns == 1
    assert len(env.dataset) == 50 and len(env.eval_dataset) == 20
    for example in env.dataset + env.eval_dataset:
        [user] = example.prompt  # no system prompt
        assert user["role"] == "user" and user["content"].isdigit() and 3 <= len(user["content"]) <= 5
        assert example.answer == user["content"][::-1]
    assert env.rubric.names == ["exact_match", "digit_accuracy"] and env.rubric.weights == [1.0, 0.5]
    assert env.sampling_args == {"temperature": 1.0, "max_tokens": 8}


def test_default_sizes_and_digit_range():
    env = load()
    assert len(env.dataset) == 2000 and len(env.eval_dataset) == 1000
    assert {len(q) for q, _ in rows(env.dataset)} == {3, 4, 5}
    assert {len(q) for q, _ in rows(load(num_examples=30, min_digits=7, max_digits=7).dataset)} == {7}


def test_package_metadata_matches_module():
    project = tomllib.loads((BUNDLED_DIR / "reverse_digits" / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lmgym.environments"] == {NAME: "reverse_digits:load_environment"}
    assert project["tool"]["setuptools"]["py-modules"] == ["reverse_digits"]
    assert describe(available_environments()[NAME]).rstrip(".") == project["project"]["description"]


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = load(seed=3), load(seed=3), load(seed=4)
    assert rows(a.dataset) == rows(b.dataset) and rows(a.eval_dataset) == rows(b.eval_dataset)
    assert rows(a.dataset) != rows(c.dataset) and rows(a.eval_dataset) != rows(c.eval_dataset)


def test_eval_split_never_overlaps_train():
    env = load()
    train, evals = {q for q, _ in rows(env.dataset)}, {q for q, _ in rows(env.eval_dataset)}
    assert not train & evals
    assert all(split_of(q) == "eval" for q in evals)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"num_examples": 0}, "num_examples must be at least 1"),
        ({"num_eval_examples": -1}, "num_eval_examples must be at least 0"),
        ({"min_digits": 0}, "min_digits must be at least 1, got 0"),
        ({"min_digits": 4, "max_digits": 3}, r"max_digits \(3\) must be at least min_digits \(4\)"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(args, message):
    with pytest.raises(UsageError, match=f"environment 'reverse-digits': {message}"):
        load(**args)


@pytest.mark.parametrize(
    "reply, exact, accuracy",
    [
        ("7183", 1.0, 1.0),
        (" 7183\n", 1.0, 1.0),
        ("7138", 0.0, 0.5),
        ("3817", 0.0, 0.0),
        ("718", 0.0, 0.75),  # a missing digit: 3 right out of 4
        ("71833", 0.0, 0.8),  # an extra digit: 4 right out of 5
        ("71830000", 0.0, 0.5),
        ("x", 0.0, 0.0),
        ("", 0.0, 0.0),
        (None, 0.0, 0.0),
    ],
)
async def test_rewards_by_hand(reply, exact, accuracy):
    rollout = await score(load(num_examples=1, num_eval_examples=0), "7183", reply)
    assert rollout.metrics == {"exact_match": exact, "digit_accuracy": pytest.approx(accuracy)}
    assert rollout.reward == pytest.approx(exact + 0.5 * accuracy)


# --- sft_examples -----------------------------------------------------------------------------


def is_correct(row):
    return row["completion"][0]["content"] == row["prompt"][0]["content"][::-1]


def test_sft_rows_are_chat_messages(module):
    data = module.sft_examples(num_examples=20)
    assert len(data) == 20
    for row in data:
        [user], [assistant] = row["prompt"], row["completion"]
        assert user["role"] == "user" and user["content"].isdigit()
        assert assistant["role"] == "assistant" and assistant["content"].isdigit()


def test_sft_without_noise_is_always_right(module):
    assert all(is_correct(row) for row in module.sft_examples(num_examples=1000, noise=0.0))


def test_sft_noise_rate_is_roughly_as_asked(module):
    data = module.sft_examples(num_examples=1000, noise=0.3)
    wrong = sum(not is_correct(row) for row in data)
    assert 200 <= wrong <= 400
    assert sum(not is_correct(row) for row in module.sft_examples(num_examples=200, noise=1.0)) == 200


def one_error_from(right):
    """Every string one drop, duplication or adjacent swap away from `right`."""
    n = len(right)
    drops = {right[:i] + right[i + 1:] for i in range(n)}
    duplicates = {right[:i] + right[i] + right[i:] for i in range(n)}
    swaps = {right[:i] + right[i + 1] + right[i] + right[i + 2:] for i in range(n - 1)}
    return (drops | duplicates | swaps) - {right}


def test_sft_errors_are_one_small_mistake(module):
    for row in module.sft_examples(num_examples=300, noise=1.0):
        right, reply = row["prompt"][0]["content"][::-1], row["completion"][0]["content"]
        assert reply in one_error_from(right), (right, reply)


def test_corrupt_always_changes_the_string(module):
    import random

    rng = random.Random(0)
    for digits in ["7", "77", "777", "1234", "1122"]:
        assert all(module.corrupt(digits, rng) != digits for _ in range(200))


def test_sft_uses_training_questions_only(module):
    sft = {row["prompt"][0]["content"] for row in module.sft_examples(num_examples=2000)}
    evals = {q for q, _ in rows(load().eval_dataset)}
    assert not sft & evals
    assert all(split_of(q) == "train" for q in sft)


def test_sft_is_deterministic(module):
    assert module.sft_examples(num_examples=100, seed=1) == module.sft_examples(num_examples=100, seed=1)
    assert module.sft_examples(num_examples=100, seed=1) != module.sft_examples(num_examples=100, seed=2)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"noise": 1.5}, "noise must be between 0 and 1, got 1.5"),
        ({"noise": -0.1}, "noise must be between 0 and 1"),
        ({"num_examples": 0}, "num_examples must be at least 1, got 0"),
        ({"min_digits": 0}, "min_digits must be at least 1"),
    ],
)
def test_sft_bad_arguments(module, args, message):
    with pytest.raises(ValueError, match=message):
        module.sft_examples(**args)
