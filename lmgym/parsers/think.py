"""ThinkParser: for reasoning models that write `<think>...</think>` and then the answer."""

from __future__ import annotations

from typing import Callable

from lmgym.parsers.parser import Parser
from lmgym.parsers.xml import mean_reward
from lmgym.types import Messages

OPEN, CLOSE = "<think>", "</think>"


class ThinkParser(Parser):
    """The answer is what follows `</think>`, optionally passed through `extract_fn`
    (e.g. pull out a `\\boxed{}` value)."""

    def __init__(self, extract_fn: Callable[[str], str] | None = None) -> None:
        self.extract_fn = extract_fn

    def parse(self, text: str) -> str:
        """Text after the last `</think>`. A `<think>` never closed gives "": the model ran
        out of budget mid-thought, and its half-formed reasoning is not an answer."""
        if CLOSE in text:
            answer = text.rsplit(CLOSE, 1)[1].strip()
        elif OPEN in text:
            answer = ""
        else:
            answer = text.strip()
        if answer and self.extract_fn is not None:
            answer = self.extract_fn(answer)
        return answer

    @staticmethod
    def _well_formed(text: str) -> bool:
        """One think block opening the reply, closed once, followed by a non-empty answer."""
        text = text.lstrip()
        if not text.startswith(OPEN) or text.count(OPEN) != 1 or text.count(CLOSE) != 1:
            return False
        return bool(text.split(CLOSE, 1)[1].strip())

    def format_reward(self, completion: str | Messages) -> float:
        """Mean over assistant replies of 1.0 (well formed) or 0.0; 0.0 with no replies."""
        return mean_reward(completion, lambda text: float(self._well_formed(text)))
