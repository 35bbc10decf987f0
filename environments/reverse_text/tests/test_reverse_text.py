"""The bundled reverse-text environment.

It is loaded by name through the registry, checked for determinism, split hygiene and
argument validation, scored by hand, and run end to end against a scripted server that
solves its task (the checks it shares with arithmetic and word-problems are in
tests/bundled_checks.py).
"""

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
from lmgym.testing import last_user_text

NAME = "reverse-text"
METRIC = "lcs_ratio"


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
        ({"min_words": 0}, "min_words must be at least 1"),
        ({"min_words": 4, "max_words": 3}, "max_words .* min_words"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        load(NAME, **args)


def test_unknown_argument_is_a_usage_error():
    with pytest.raises(lmgym.LmgymError, match="bad arguments"):
        load(NAME, no_such_argument=1)


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


# --- end to end through a real HTTP server --------------------------------------------------


def reply_reverse_text(request):
    return f"<answer>{last_user_text(request).split(chr(10))[-1][::-1]}</answer>"


async def test_end_to_end_rollouts_score_full_marks():
    await check_end_to_end_rollouts_score_full_marks(NAME, METRIC, reply_reverse_text)
