"""Wordle: find a secret five-letter word, with feedback on its letters after each guess.

Each reply is one guess, `<guess>crane</guess>`, optionally after a `<think>` block. Each
letter is marked G (right spot), Y (in the word, elsewhere) or - (not in the word, or not
that many times): greens match first, then yellows left to right while the secret has
unmatched copies, so "papal" against "apple" is YYG-Y. The game ends when the word is
found or the guesses (the turn budget, `max_turns`) run out. A reply that is no valid
guess (no tags, not five letters, not in the list) is told why and still uses a turn: a
free retry would let a model loop on bad replies with no bound on the calls.

Rewards: `solved` (1.0); `letter_credit` (0.2), the best guess's (greens + yellows/2)/5,
a signal before any game is won; `fewer_turns` (0.2), 1.0 for a win at the first guess
down to 0.0 at the last; the strict `format_reward` (0.2). A win scores at least 1.0, a
loss below 0.4, so pass@k counts wins. `guesses_used`, `invalid_guesses`: weight-0 metrics.

`words.txt` (package data) holds the secrets and the valid guesses; `allow_any_guess`
accepts any five letters. A word's split is a hash of it: train and eval never share one.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset

from lmgym import MultiTurnEnv, Rubric, XMLParser
from lmgym.envs.procedural import split_of
from lmgym.types import Example, Messages

WORDS_FILE = Path(__file__).with_name("words.txt")
SYSTEM_PROMPT = (
    "Let's play Wordle. Find the secret five-letter English word in at most {max_turns} guesses. "
    "Reply with one guess inside guess tags, for example: <guess>crane</guess>. You may think first "
    "inside <think></think> tags. After each guess you get a mark per letter: G = right letter in "
    "the right spot, Y = in the word but in another spot, - = not in the word (or not as many "
    "times as you used it). Guess common English words only; an invalid guess still uses a turn."
)
QUESTION = "I have picked a secret five-letter word. You have {max_turns} guesses. What is your first guess?"
FIVE_LETTERS = re.compile(r"[a-z]{5}")


def load_words() -> list[str]:
    """One lower-case word a line; `#` lines are comments."""
    lines = (line.strip().lower() for line in WORDS_FILE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def feedback(guess: str, secret: str) -> str:
    """A mark per letter: greens first, then yellows left to right while unmatched copies last."""
    marks = ["G" if g == s else "-" for g, s in zip(guess, secret)]
    unmatched = Counter(s for s, mark in zip(secret, marks) if mark != "G")
    for i, letter in enumerate(guess):
        if marks[i] == "-" and unmatched[letter] > 0:
            marks[i], unmatched[letter] = "Y", unmatched[letter] - 1
    return "".join(marks)


def invalid_reason(guess: str, words: frozenset[str] | None) -> str | None:
    """Why `guess` cannot be played, or None when it can (`words` None: any five letters)."""
    if not guess:
        return "no guess found; reply with one five-letter word inside <guess></guess> tags"
    if not FIVE_LETTERS.fullmatch(guess):
        return f"{guess!r} is not five letters a-z"
    if words is not None and guess not in words:
        return f"{guess!r} is not in the word list"
    return None


class WordleEnv(MultiTurnEnv):
    """One game per rollout; `state` holds the `secret`, the valid `guesses` with their marks,
    the `feedback` text of every reply, `invalid_guesses`, `solved` and `max_turns`."""

    def __init__(self, *args: Any, words: frozenset[str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.words = words

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        state.update(secret=example.answer, guesses=[], feedback=[], invalid_guesses=0, solved=False, max_turns=self.max_turns)

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        """Plays each reply once (the loop asks right after it), then: is the word found?"""
        if len(state["feedback"]) < state["turn"]:
            self.play(messages[-1].get("content") or "", state)
        return state["solved"]

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        return [{"role": "user", "content": state["feedback"][-1]}]

    def play(self, reply: str, state: dict[str, Any]) -> None:
        guess = (self.parser.parse(reply).guess or "").lower()
        if reason := invalid_reason(guess, self.words):
            state["invalid_guesses"] += 1
            text = f"Invalid guess: {reason}. It still used a turn."
        else:
            marks = feedback(guess, state["secret"])
            state["guesses"].append([guess, marks])
            state["solved"] = marks == "GGGGG"
            prefix = f"Guess {state['turn']}: "
            text = f"{prefix}{' '.join(guess.upper())}\n{'Marks:':<{len(prefix)}}{' '.join(marks)}"
        left = self.max_turns - state["turn"]
        ending = f"{left} guess{'es' * (left != 1)} left." if left else f"No guesses left. The word was {state['secret'].upper()}."
        state["feedback"].append(f"{text}\n{ending}")


def solved(state) -> float:
    return float(state["solved"])


def letter_credit(state) -> float:
    """(greens + yellows / 2) / 5 of the best valid guess; 0.0 without one."""
    return max(((m.count("G") + m.count("Y") / 2) / len(m) for _, m in state["guesses"]), default=0.0)


def fewer_turns(state) -> float:
    """1.0 for a win at the first reply, falling linearly to 0.0 at the last; 0.0 for a loss."""
    budget = state["max_turns"]
    return float(state["solved"]) * ((budget - state["turn"]) / (budget - 1) if budget > 1 else 1.0)


def guesses_used(state) -> float:
    return float(state["turn"])


def invalid_guesses(state) -> float:
    return float(state["invalid_guesses"])


def draw_secrets(words: list[str], split: str, n: int, seed: int | str, argument: str, least: int) -> list[str]:
    """`n` distinct words of `split`, drawn with `random.Random(seed)`."""
    pool = [w for w in words if split_of(w) == split]
    if not least <= n <= len(pool):
        raise ValueError(f"{argument} must be between {least} and {len(pool)} (the {split} words), got {n}")
    return random.Random(seed).sample(pool, n)


def load_environment(
    num_examples: int = 200, num_eval_examples: int = 100, max_turns: int = 6, seed: int = 0, allow_any_guess: bool = False
) -> WordleEnv:
    words = load_words()
    train = draw_secrets(words, "train", num_examples, seed, "num_examples", least=1)
    evals = draw_secrets(words, "eval", num_eval_examples, f"{seed}/eval", "num_eval_examples", least=0)
    question = QUESTION.format(max_turns=max_turns)
    parser = XMLParser(["think", "guess"], answer_field="guess", optional=("think",))
    rubric = Rubric(
        [solved, letter_credit, fewer_turns, parser.get_format_reward_func(), guesses_used, invalid_guesses],
        weights=[1.0, 0.2, 0.2, 0.2, 0.0, 0.0],
        parser=parser,
    )
    return WordleEnv(
        Dataset.from_list([{"question": question, "answer": w} for w in train]),
        Dataset.from_list([{"question": question, "answer": w} for w in evals]) if evals else None,
        words=None if allow_any_guess else frozenset(words),
        system_prompt=SYSTEM_PROMPT.format(max_turns=max_turns),
        parser=parser,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 512},
    )
