"""Procedural datasets with train and eval splits that can never share a question.

A different seed for the eval split is not enough: two random draws can produce the same
question. Instead a question's split is a stable hash of its text (about a fifth of all
questions belong to eval), and each split draws until it has enough of its own. The
eval set also stays the same when only the number of training examples changes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
EVAL_SHARE_OF_256 = 52  # ~20% of questions belong to the eval split


def split_of(question: str) -> str:
    """'eval' for about a fifth of all questions, 'train' for the rest."""
    return "eval" if hashlib.sha256(question.encode()).digest()[0] < EVAL_SHARE_OF_256 else "train"


def generate(make: Callable[[random.Random, int], Row], n: int, rng: random.Random, split: str, *, hint: str = "") -> list[Row]:
    """`n` rows from `make(rng, i)` (i = rows kept so far) whose `question` is in `split`.

    Gives up with a ValueError, instead of looping for ever, when the generator's space
    holds too few questions of that split; `hint` says which arguments to widen."""
    rows: list[Row] = []
    attempts = 100 * n + 1000
    while len(rows) < n:
        if attempts == 0:
            raise ValueError(f"too few {split} questions for {n} examples{': ' + hint if hint else ''}")
        attempts -= 1
        row = make(rng, len(rows))
        if split_of(row["question"]) == split:
            rows.append(row)
    return rows


def train_and_eval(
    make: Callable[[random.Random, int], Row], num_examples: int, num_eval_examples: int, seed: int, *, hint: str = ""
) -> tuple[list[Row], list[Row]]:
    """Both splits: train from `Random(seed)`, eval from `Random(f"{seed}/eval")`."""
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1, got {num_examples}")
    if num_eval_examples < 0:
        raise ValueError(f"num_eval_examples must be at least 0, got {num_eval_examples}")
    train = generate(make, num_examples, random.Random(seed), "train", hint=hint)
    evals = generate(make, num_eval_examples, random.Random(f"{seed}/eval"), "eval", hint=hint)
    return train, evals
