"""Reverse a string of digits (for the tiny character-level model).

The user message is only the digits, say "3817", and the answer is "7183": no system
prompt, because the tiny model's context is short. Strings of `min_digits` to
`max_digits` digits (leading zeros included) are drawn with `random.Random(seed)`; a
string's split is fixed by a hash of it, so train and eval never share one.

Rewards: `exact_match` (weight 1.0) and `digit_accuracy` (weight 0.5), the fraction of
positions right, which gives GRPO a signal before any reply is fully right.
`sft_examples` writes warm-start data from a noisy teacher, which makes an error in a
share of its replies, so supervised training stops at a modest accuracy and RL has
the rest to do.
"""

from __future__ import annotations

import random
from typing import Callable

from datasets import Dataset

from lmgym import Rubric, SingleTurnEnv
from lmgym.envs import generate, train_and_eval

HINT = "allow more digits"


def check_sizes(min_digits: int, max_digits: int) -> None:
    if min_digits < 1:
        raise ValueError(f"min_digits must be at least 1, got {min_digits}")
    if max_digits < min_digits:
        raise ValueError(f"max_digits ({max_digits}) must be at least min_digits ({min_digits})")


def question_maker(min_digits: int, max_digits: int) -> Callable[[random.Random, int], dict]:
    def make(rng: random.Random, _index: int) -> dict:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(min_digits, max_digits)))
        return {"question": digits, "answer": digits[::-1]}

    return make


def exact_match(completion, answer: str, parser) -> float:
    """1.0 when the reply, stripped, is exactly the reversed digits."""
    return 1.0 if parser.parse_answer(completion) == answer else 0.0


def digit_accuracy(completion, answer: str, parser) -> float:
    """Share of positions right, over the longer of reply and answer (so extra or missing
    digits cost); 0.0 when there is no reply."""
    given = parser.parse_answer(completion)
    if not given:
        return 0.0
    return sum(g == a for g, a in zip(given, answer)) / max(len(given), len(answer))


def corrupt(digits: str, rng: random.Random) -> str:
    """`digits` with one error: two adjacent digits swapped, or one dropped or duplicated."""
    while True:
        i = rng.randrange(len(digits))
        kind = rng.choice(("swap", "drop", "duplicate"))
        if kind == "swap" and i + 1 < len(digits):
            wrong = digits[:i] + digits[i + 1] + digits[i] + digits[i + 2:]
        elif kind == "drop" and len(digits) > 1:
            wrong = digits[:i] + digits[i + 1:]
        else:
            wrong = digits[:i] + digits[i] + digits[i:]
        if wrong != digits:  # swapping equal digits changes nothing: draw again
            return wrong


def sft_examples(
    num_examples: int = 2000, noise: float = 0.3, seed: int = 0, min_digits: int = 3, max_digits: int = 5
) -> list[dict]:
    """Prompt/completion rows from training-split questions; a `noise` share of replies is wrong."""
    check_sizes(min_digits, max_digits)
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1, got {num_examples}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be between 0 and 1, got {noise}")
    rng = random.Random(f"{seed}/sft")
    rows = generate(question_maker(min_digits, max_digits), num_examples, random.Random(seed), "train", hint=HINT)
    examples = []
    for row in rows:
        reply = corrupt(row["answer"], rng) if rng.random() < noise else row["answer"]
        examples.append(
            {
                "prompt": [{"role": "user", "content": row["question"]}],
                "completion": [{"role": "assistant", "content": reply}],
            }
        )
    return examples


def load_environment(
    num_examples: int = 2000,
    num_eval_examples: int = 1000,
    min_digits: int = 3,
    max_digits: int = 5,
    seed: int = 0,
) -> SingleTurnEnv:
    check_sizes(min_digits, max_digits)
    make = question_maker(min_digits, max_digits)
    train, evals = train_and_eval(make, num_examples, num_eval_examples, seed, hint=HINT)
    rubric = Rubric([exact_match, digit_accuracy], weights=[1.0, 0.5])
    def noisy_teacher(seed: int = 0, num_examples: int = 2000, noise: float = 0.3) -> list[dict]:
        return sft_examples(num_examples, noise, seed, min_digits, max_digits)

    return SingleTurnEnv(
        Dataset.from_list(train),
        Dataset.from_list(evals) if evals else None,
        rubric=rubric,
        sampling_args={"temperature": 1.0, "max_tokens": 8},
        sft_examples=noisy_teacher,
    )
