"""Final answers in `\\boxed{}` (MATH-500, AIME), and AIME's integer answers."""

from __future__ import annotations

import re

from lmgym.parsers.parser import Parser
from lmgym.rubrics.math_rubric import last_boxed

BOXED_PROMPT = "Solve the problem, reasoning step by step, and put your final answer within \\boxed{}."
_AIME_INTEGER = re.compile(r"0*(\d{1,3})")


class BoxedParser(Parser):
    """The answer is the content of the last `\\boxed{...}` of the last reply; no box, no answer."""

    def parse(self, text: str) -> str | None:
        boxed = last_boxed(text)
        return boxed.strip() if boxed is not None else None


def aime_integer(text: str | None) -> int | None:
    """An AIME answer: an integer from 0 to 999 (leading zeros allowed: "033"), else None."""
    if text is None:
        return None
    match = _AIME_INTEGER.fullmatch(text.strip().strip("$").strip())
    return int(match.group(1)) if match else None
