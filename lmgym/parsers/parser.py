"""The base parser: the model's answer is the text of its last reply.

A parser turns model text into fields and offers a *format reward* that a rubric can
weight. Parsers are pure and synchronous, so reward functions can call them freely.
"""

from __future__ import annotations

from typing import Any, Callable

from lmgym.messages import last_assistant_text
from lmgym.types import Messages


class Parser:
    """Answer = the last reply, stripped. Every reply is well formatted."""

    def parse(self, text: str) -> Any:
        return text.strip()

    def parse_answer(self, completion: str | Messages) -> str | None:
        """The answer the rubric should check, or None when the model gave none."""
        text = last_assistant_text(completion)
        if text is None:
            return None
        return self.parse(text) or None

    def format_reward(self, completion: str | Messages) -> float:
        """1.0 when every assistant reply follows the expected format, else less."""
        return 1.0

    def get_format_reward_func(self) -> Callable[..., float]:
        """A reward function named `format_reward`, ready to add to a Rubric."""

        def format_reward(completion: str | Messages) -> float:
            return self.format_reward(completion)

        return format_reward
