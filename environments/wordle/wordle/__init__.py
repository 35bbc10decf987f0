"""Wordle: find a secret five-letter word, with feedback on its letters after each guess.

Each reply is one guess, `<guess>crane</guess>`, optionally after a `<think>` block. Each
letter is marked G (right spot), Y (in the word, elsewhere) or - (not in the word, or not
that many times): greens match first, then yellows left to right while the secret has
unmatched copies, so "papal" against "apple" is YYG-Y. The game ends when the word is
found or the guesses (the turn budget, `max_turns`) run out. A reply that is no valid
guess (no tags, not five letters, not in the list) is told why and still uses a turn
(the turn handling and shared rewards are `lmgym.envs.game`'s).

Its partial credit, `letter_credit` (weight 0.2), is the best guess's
(greens + yellows/2)/5: a signal before any game is won.

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

from lmgym import XMLParser
from lmgym.envs import GuessingGameEnv, game_rubric, split_of
from lmgym.errors import InvalidGuess

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


class WordleEnv(GuessingGameEnv):
    """One game per rollout; `state["guesses"]` holds each valid guess with its marks."""

    secret_name = "word"

    def __init__(self, *args: Any, words: frozenset[str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.words = words

    def judge(self, guess: str, state: dict[str, Any]) -> tuple[str, bool]:
        guess = guess.lower()
        if reason := invalid_reason(guess, self.words):
            raise InvalidGuess(reason)
        marks = feedback(guess, state["secret"])
        state["guesses"].append([guess, marks])
        prefix = f"Guess {state['turn']}: "
        return f"{prefix}{' '.join(guess.upper())}\n{'Marks:':<{len(prefix)}}{' '.join(marks)}", marks == "GGGGG"

    def show(self, secret: str) -> str:
        return secret.upper()


def letter_credit(state) -> float:
    """(greens + yellows / 2) / 5 of the best valid guess; 0.0 without one."""
    return max(((m.count("G") + m.count("Y") / 2) / len(m) for _, m in state["guesses"]), default=0.0)


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
    rubric = game_rubric(letter_credit, parser)
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
