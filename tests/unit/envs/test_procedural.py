"""Procedural splits: disjoint by construction, and a clear error when the space is small."""

import random

import pytest

from lmgym.envs.procedural import split_of, train_and_eval


def make(rng: random.Random, index: int) -> dict:
    return {"question": f"q{rng.randint(0, 10_000)}", "index": index}


def test_splits_never_share_a_question_and_follow_the_hash():
    train, evals = train_and_eval(make, 300, 100, seed=3)
    assert len(train) == 300 and len(evals) == 100
    assert not {r["question"] for r in train} & {r["question"] for r in evals}
    assert {split_of(r["question"]) for r in train} == {"train"}
    assert {split_of(r["question"]) for r in evals} == {"eval"}
    assert [r["index"] for r in train[:3]] == [0, 1, 2]


def test_eval_split_does_not_depend_on_the_train_size():
    assert train_and_eval(make, 5, 20, seed=1)[1] == train_and_eval(make, 50, 20, seed=1)[1]


def test_too_small_a_space_is_an_error_with_the_hint():
    def tiny(rng, index):
        return {"question": "always the same"}

    split = split_of("always the same")
    other = "eval" if split == "train" else "train"
    with pytest.raises(ValueError, match=f"too few {other} questions for 1 examples: widen it"):
        train_and_eval(tiny, 1, 1, seed=0, hint="widen it")
