"""XMLParser: replies made of tagged fields, e.g. `<think>...</think><answer>...</answer>`.

Parsing is lenient (the last occurrence of each tag wins, so a model that restates its
answer is read the way a human would), but the format reward is strict. A lenient format
reward, one that only looks for some opening or closing tags, pays the model for
`<answer>..</think>`, for unclosed tags and for tags out of order, and RL then teaches the
model exactly those habits. So a reply earns format credit only when it is the declared
tags, each opened and closed once, in order, not nested, none empty, with nothing but
whitespace around them.
"""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Callable

from lmgym.messages import assistant_contents, last_assistant_text
from lmgym.parsers.parser import Parser
from lmgym.types import Messages

Field = str | tuple[str, ...]


def mean_reward(completion: str | Messages, score: Callable[[str], float]) -> float:
    """Mean of `score(content)` over assistant replies; 0.0 with none, so silence earns nothing."""
    contents = assistant_contents(completion)
    if not contents:
        return 0.0
    return sum(score(c) if c else 0.0 for c in contents) / len(contents)


def _names(field: Field) -> tuple[str, ...]:
    """All accepted tag names of a field; the first is canonical."""
    names = (field,) if isinstance(field, str) else tuple(field)
    if not names or not all(isinstance(n, str) and re.fullmatch(r"[\w.-]+", n) for n in names):
        raise ValueError(f"invalid field {field!r}")
    return names


class XMLParser(Parser):
    """Fields in XML-like tags; `optional` names canonical fields a reply may leave out."""

    def __init__(
        self,
        fields: list[Field],
        answer_field: str = "answer",
        optional: tuple[str, ...] = (),
    ) -> None:
        self.fields = [_names(f) for f in fields]
        canonical = [names[0] for names in self.fields]
        all_names = [n for names in self.fields for n in names]
        if len(set(all_names)) != len(all_names):
            raise ValueError("a tag name may belong to only one field")
        for name in (answer_field, *optional):
            if name not in canonical:
                raise ValueError(f"{name!r} is not a declared field")
        self.answer_field = answer_field
        self.optional = frozenset(optional)
        # Which field (by index) each tag name belongs to, for the strict scan.
        self._field_of = {n: i for i, names in enumerate(self.fields) for n in names}
        alternation = "|".join(re.escape(n) for n in sorted(all_names, key=len, reverse=True))
        self._tag = re.compile(rf"<(/?)({alternation})>")

    def parse(self, text: str) -> SimpleNamespace:
        """One attribute per canonical field: stripped content of its last occurrence, or None."""
        values = {}
        for names in self.fields:
            alternation = "|".join(re.escape(n) for n in names)
            matches = re.findall(rf"<({alternation})>(.*?)</\1>", text, re.DOTALL)
            values[names[0]] = matches[-1][1].strip() if matches else None
        return SimpleNamespace(**values)

    def parse_answer(self, completion: str | Messages) -> str | None:
        """The answer field of the last assistant reply; None if absent or empty."""
        text = last_assistant_text(completion)
        if text is None:
            return None
        return getattr(self.parse(text), self.answer_field) or None

    def format(self, **fields: str) -> str:
        """Render canonical fields in declared order (fields not given are left out)."""
        canonical = [names[0] for names in self.fields]
        unknown = set(fields) - set(canonical)
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        parts = [
            f"<{name}>\n{fields[name]}\n</{name}>"
            for name in canonical
            if fields.get(name) is not None
        ]
        return "\n".join(parts)

    def _well_formed(self, text: str) -> bool:
        """The strict check for one reply: see the module docstring."""
        expected = 0  # index of the next field that may open
        pos = 0  # end of the last closing tag
        seen: set[int] = set()
        tags = list(self._tag.finditer(text))
        if len(tags) % 2:
            return False
        for opening, closing in zip(tags[::2], tags[1::2]):
            if opening.group(1) or not closing.group(1):
                return False  # a pair must be <x>...</x>, not </x> first or two openings
            if opening.group(2) != closing.group(2):
                return False  # mismatched: <answer>...</think> or <code>...</python>
            index = self._field_of[opening.group(2)]
            if index < expected:
                return False  # duplicated or out of order
            skipped = range(expected, index)
            if any(self.fields[i][0] not in self.optional for i in skipped):
                return False  # a required field was jumped over
            if text[pos : opening.start()].strip():
                return False  # text outside the tags
            if not text[opening.end() : closing.start()].strip():
                return False  # an empty field: no credit for answering nothing
            seen.add(index)
            expected, pos = index + 1, closing.end()
        if text[pos:].strip():
            return False
        required = {i for i, names in enumerate(self.fields) if names[0] not in self.optional}
        return required <= seen

    def format_reward(self, completion: str | Messages) -> float:
        """Mean over assistant replies of 1.0 (strictly well formed) or 0.0."""
        return mean_reward(completion, lambda text: float(self._well_formed(text)))
