"""Mastermind: break a secret code of digits, told after each guess how close it came.

The code is `code_length` digits from 0 to `num_digits - 1`, repeats allowed (4 of 6 by
default: the board game's 1296 codes). Each reply is one guess, `<guess>0123</guess>`,
optionally after a `<think>` block, answered with two counts: `exact` (right digit, right
place) and `misplaced` (right digit, wrong place), a digit counting at most as often as
the code holds it. No single answer suffices: the model must combine all of them so far,
the state this game tests. Five guesses always suffice for 4 of 6 (Knuth 1977); the
default ten leave room for imperfect reasoning. A reply that is no valid guess is told
why and still uses a turn, so a rollout's length stays bounded by `max_turns`.

Rewards: `solved` (1.0); `peg_credit` (0.2), the best guess's (exact + misplaced/2) /
code_length, a signal before any game is won; `fewer_turns` (0.2), 1.0 for a win at the
first guess down to 0.0 at the last; the strict `format_reward` (0.2). A win scores at
least 1.0, a loss below 0.4. `guesses_used`, `invalid_guesses`: weight-0 metrics. A
code's split is a hash of it, so train and eval never share a secret.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

from datasets import Dataset

from lmgym import MultiTurnEnv, Rubric, XMLParser
from lmgym.envs.procedural import split_of
from lmgym.types import Example, Messages

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


class MastermindEnv(MultiTurnEnv):
    """One game per rollout; `state` holds the `secret`, the valid `guesses` with their
    (exact, misplaced), the `feedback` of every reply, `invalid_guesses`, `solved`, `max_turns`."""

    def __init__(self, *args: Any, code_length: int, num_digits: int, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.valid = re.compile(f"[0-{num_digits - 1}]{{{code_length}}}")
        self.code_length, self.num_digits = code_length, num_digits

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        state.update(secret=example.answer, guesses=[], feedback=[], invalid_guesses=0, solved=False, max_turns=self.max_turns)

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        """Plays each reply once (the loop asks right after it), then: is the code broken?"""
        if len(state["feedback"]) < state["turn"]:
            self.play(messages[-1].get("content") or "", state)
        return state["solved"]

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        return [{"role": "user", "content": state["feedback"][-1]}]

    def play(self, reply: str, state: dict[str, Any]) -> None:
        guess = re.sub(r"[\s,]", "", self.parser.parse(reply).guess or "")  # "1 2 3 4" is 1234
        if not self.valid.fullmatch(guess):
            state["invalid_guesses"] += 1
            wanted = f"{self.code_length} digits from 0 to {self.num_digits - 1} inside <guess></guess> tags"
            problem = f"{guess!r} is not {wanted}" if guess else f"no guess found; reply with {wanted}"
            text = f"Invalid guess: {problem}. It still used a turn."
        else:
            exact, misplaced = score(guess, state["secret"])
            state["guesses"].append([guess, exact, misplaced])
            state["solved"] = exact == self.code_length
            text = f"Guess {state['turn']}: {guess} -> exact {exact}, misplaced {misplaced}."
        left = self.max_turns - state["turn"]
        ending = f"{left} guess{'es' * (left != 1)} left." if left else f"No guesses left. The code was {state['secret']}."
        state["feedback"].append(f"{text}\n{ending}")


def solved(state) -> float:
    return float(state["solved"])


def peg_credit(state) -> float:
    """(exact + misplaced / 2) / code length of the best valid guess; 0.0 without one."""
    return max(((e + m / 2) / len(guess) for guess, e, m in state["guesses"]), default=0.0)


def fewer_turns(state) -> float:
    """1.0 for a win at the first reply, falling linearly to 0.0 at the last; 0.0 for a loss."""
    budget = state["max_turns"]
    return float(state["solved"]) * ((budget - state["turn"]) / (budget - 1) if budget > 1 else 1.0)


def guesses_used(state) -> float:
    return float(state["turn"])


def invalid_guesses(state) -> float:
    return float(state["invalid_guesses"])


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
    rubric = Rubric(
        [solved, peg_credit, fewer_turns, parser.get_format_reward_func(), guesses_used, invalid_guesses],
        weights=[1.0, 0.2, 0.2, 0.2, 0.0, 0.0],
        parser=parser,
    )
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
