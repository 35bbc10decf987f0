"""Multiple-choice questions: lettered options, shuffled reproducibly, and the letter read
back from a reply by a benchmark's own rules.

A benchmark's rules are the regular expressions its authors' evaluation script tries, in
order (`MMLU_PRO`, `GPQA`); the first that finds a valid letter gives the answer. A reply
where none does has no answer, and scores 0.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

from lmgym.parsers.parser import Parser
from lmgym.rubrics.rubric import Rubric

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Rule:
    """A pattern whose group 1 is the letter; its first match, or its last with `last`."""

    pattern: re.Pattern[str]
    last: bool = False

    def find(self, text: str) -> str | None:
        if self.last:
            matches = list(self.pattern.finditer(text))
            return matches[-1].group(1) if matches else None
        match = self.pattern.search(text)
        return match.group(1) if match else None


# MMLU-Pro's evaluate_from_api.py: "answer is (X)", else "Answer: X" (its first line that
# has one), else the last capital A-J standing alone as a word.
MMLU_PRO = (
    Rule(re.compile(r"answer is \(?([A-J])\)?")),
    Rule(re.compile(r".*[aA]nswer:\s*([A-J])")),
    Rule(re.compile(r"\b([A-J])\b"), last=True),
)
# GPQA's baselines: "answer is (X)", "Answer: (X)", "answer: (X)", "answer (X)", then any "(X)".
GPQA = tuple(Rule(re.compile(p)) for p in (r"answer is \((.)\)", r"Answer: \((.)\)", r"answer: \((.)\)", r"answer \((.)\)", r"\((.)\)"))


def read_letter(text: str, rules: Sequence[Rule], letters: str) -> str | None:
    """The letter the first rule finds among `letters`; a rule whose match is no valid letter is passed over."""
    for rule in rules:
        letter = rule.find(text)
        if letter is not None and letter in letters:
            return letter
    return None


def lettered(options: Sequence[str], template: str = "({letter}) {option}") -> str:
    """The options one per line, lettered A, B, C, ... in `template`."""
    if len(options) > len(LETTERS):
        raise ValueError(f"at most {len(LETTERS)} options, got {len(options)}")
    return "\n".join(template.format(letter=letter, option=option) for letter, option in zip(LETTERS, options))


def shuffled(options: Sequence[str], key: str) -> tuple[list[str], int]:
    """`options` in an order drawn from `key` (the same key, the same order), and where the first one went."""
    order = list(range(len(options)))
    random.Random(key).shuffle(order)
    return [options[i] for i in order], order.index(0)


class ChoiceParser(Parser):
    """The answer is the letter `rules` read in the last reply."""

    def __init__(self, rules: Sequence[Rule], letters: str):
        self.rules, self.letters = tuple(rules), letters

    def parse(self, text: str) -> str | None:
        return read_letter(text, self.rules, self.letters)


def choice_rubric(parser: ChoiceParser) -> Rubric:
    """Reward `correct`: 1 when the letter read is the answer's, else 0 (none read included)."""

    def correct(completion, answer, parser) -> float:
        return float(parser.parse_answer(completion) == answer)

    return Rubric([correct], parser=parser)
