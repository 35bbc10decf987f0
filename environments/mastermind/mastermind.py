"""Mastermind: break a secret code of digits, told after each guess how close it came.

The code is `code_length` digits from 0 to `num_digits - 1`, repeats allowed (4 of 6 by
default: the board game's 1296 codes). Each reply is one guess, `<guess>0123</guess>`,
optionally after a `<think>` block, answered with two counts: `exact` (right digit, right
place) and `misplaced` (right digit, wrong place), a digit counting at most as often as
the code holds it. No single answer suffices: the model must combine all of them so far,
the state this game tests. Five guesses always suffice for 4 of 6 (Knuth 1977); the
default ten leave room for imperfect reasoning. A reply that is no valid guess is told
why and still uses a turn (the turn handling and shared rewards are `lmgym.envs.game`'s).

Its partial credit, `peg_credit` (weight 0.2), is the best guess's
(exact + misplaced/2) / code_length. A code's split is a hash of it, so train and eval
never share a secret.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from datasets import Dataset

from lmgym import XMLParser
from lmgym.envs import GuessingGameEnv, game_rubric, split_of
from lmgym.errors import InvalidGuess

SYSTEM_PROMPT = (
    "Let's play Mastermind. I picked a secret code of {length} digits, each from 0 to {top}; a digit "
    "may repeat. Find it in at most {max_turns} guesses. Reply with one guess of {length} digits inside "
    "guess tags, for example: <guess>{example}</guess>. You may think first inside <think></think> "
    "tags. After each guess I tell you how many digits are exact (right digit, right place) and how "
    "many are misplaced (in the code, but in another place). An invalid guess still uses a turn."
)
QUESTION = "The code is set. You have {max_turns} guesses. What is your first guess?"


def score(guess: str, code: str) -> tuple[int, int]:
    """(exact, misplaced): a digit matches at most as often as it appears in both."""
    exact = sum(g == c for g, c in zip(guess, code))
    common = sum((Counter(guess) & Counter(code)).values())
    return exact, common - exact


class MastermindEnv(GuessingGameEnv):
    """One game per rollout; `state["guesses"]` holds each valid guess with (exact, misplaced)."""

    secret_name = "code"

    def __init__(self, *args: Any, code_length: int, num_digits: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.valid = re.compile(f"[0-{num_digits - 1}]{{{code_length}}}")
        self.code_length, self.num_digits = code_length, num_digits

    def judge(self, guess: str, state: dict[str, Any]) -> tuple[str, bool]:
        guess = re.sub(r"[\s,]", "", guess)  # "1 2 3 4" is 1234
        if not self.valid.fullmatch(guess):
            wanted = f"{self.code_length} digits from 0 to {self.num_digits - 1} inside <guess></guess> tags"
            raise InvalidGuess(f"{guess!r} is not {wanted}" if guess else f"no guess found; reply with {wanted}")
        exact, misplaced = score(guess, state["secret"])
        state["guesses"].append([guess, exact, misplaced])
        return f"Guess {state['turn']}: {guess} -> exact {exact}, misplaced {misplaced}.", exact == self.code_length


def peg_credit(state) -> float:
    """(exact + misplaced / 2) / code length of the best valid guess; 0.0 without one."""
    return max(((e + m / 2) / len(guess) for guess, e, m in state["guesses"]), default=0.0)


def draw_codes(n: int, split: str, seed: int | str, code_length: int, num_digits: int, argument: str) -> list[str]:
    """`n` distinct codes of `split`, drawn with `random.Random(seed)`; a ValueError rather
    than an endless loop when the code space holds too few."""
    rng, codes = random.Random(seed), {}  # a dict: distinct, in the order drawn
    for _ in range(100 * n + 1000):
        if len(codes) == n:
            break
        code = "".join(str(rng.randrange(num_digits)) for _ in range(code_length))
        if split_of(code) == split:
            codes[code] = None
    if len(codes) < n:
        raise ValueError(f"too few {split} codes for {argument}={n}: allow a longer code_length or more num_digits")
    return list(codes)


def load_environment(
    num_examples: int = 200, num_eval_examples: int = 100, code_length: int = 4, num_digits: int = 6, max_turns: int = 10, seed: int = 0
) -> MastermindEnv:
    for name, value, least in [("num_examples", num_examples, 1), ("num_eval_examples", num_eval_examples, 0)]:
        if value < least:
            raise ValueError(f"{name} must be at least {least}, got {value}")
    if not 1 <= code_length <= 10:
        raise ValueError(f"code_length must be between 1 and 10, got {code_length}")
    if not 2 <= num_digits <= 10:
        raise ValueError(f"num_digits must be between 2 and 10, got {num_digits}")
    train = draw_codes(num_examples, "train", seed, code_length, num_digits, "num_examples")
    evals = draw_codes(num_eval_examples, "eval", f"{seed}/eval", code_length, num_digits, "num_eval_examples")
    question = QUESTION.format(max_turns=max_turns)
    example = "".join(str(i % num_digits) for i in range(code_length))
    parser = XMLParser(["think", "guess"], answer_field="guess", optional=("think",))
    rubric = game_rubric(peg_credit, parser)
    return MastermindEnv(
        Dataset.from_list([{"question": question, "answer": code} for code in train]),
        Dataset.from_list([{"question": question, "answer": code} for code in evals]) if evals else None,
        code_length=code_length,
        num_digits=num_digits,
        system_prompt=SYSTEM_PROMPT.format(length=code_length, top=num_digits - 1, max_turns=max_turns, example=example),
        parser=parser,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 512},
    )
