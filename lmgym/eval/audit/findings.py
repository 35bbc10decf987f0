"""What the audit reports (`Finding`) and how it reads a record: which rollouts are
scored, their final text, the reference answer, and small shared helpers."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from lmgym.eval.results import is_finite_number
from lmgym.messages import last_assistant_text
from lmgym.types import RolloutRecord

METRICS_FILE = "metrics.jsonl"  # lmgym.train.metrics.METRICS_FILE; that package imports torch
AUDIT_FILE = "audit.json"
SEVERITIES = ("high", "medium", "low")
MAX_EXAMPLES = 20  # rollout references kept per finding in audit.json
_REF_LIMIT: ContextVar[int] = ContextVar("audit_ref_limit", default=MAX_EXAMPLES)
FORMAT_MARK = "format"  # a metric whose name contains this is a format reward
CORRECTNESS_PREFIXES = ("correct", "exact", "accuracy", "solved")  # metrics that say "right answer"

Record = RolloutRecord


@dataclass(frozen=True)
class Finding:
    """What one check found: `count` of `total` items (rollouts, groups or eval points)."""

    check: str
    severity: str
    count: int
    total: int | None
    examples: tuple[str, ...]
    explanation: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        return self.count / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check, "severity": self.severity, "count": self.count, "total": self.total,
            "fraction": self.fraction, "examples": list(self.examples), "explanation": self.explanation,
            "details": self.details,
        }


# -- reading records -------------------------------------------------------------------------
def scored(records: Iterable[Record]) -> list[Record]:
    """The rollouts that have a reward: no error and a numeric `reward`."""
    return [r for r in records if not r.get("error") and is_finite_number(r.get("reward"))]


def final_text(record: Record) -> str:
    """The content of the last assistant message ('' when there is none)."""
    return last_assistant_text(record.get("completion") or []) or ""


def answer_text(record: Record) -> str | None:
    """The reference answer as text, when it is a non-empty string or a number."""
    answer = record.get("answer")
    if isinstance(answer, bool) or answer is None:
        return None
    if isinstance(answer, int) or (isinstance(answer, float) and answer.is_integer()):
        return str(int(answer))
    if isinstance(answer, float):
        return repr(answer)
    if isinstance(answer, str) and answer.strip():
        return answer
    return None


def contains_answer(text: str, answer: str) -> bool:
    """Whether `answer` occurs in `text` as a whole run of tokens, ignoring case and spacing:
    "42" is in "<answer>42</answer>" and "x = 42." but not in "142"."""
    pattern = r"(?<!\w)" + re.escape(_normal(answer)) + r"(?!\w)"
    return re.search(pattern, _normal(text)) is not None


def rollout_ref(record: Record) -> str:
    return f"{record.get('example_id')}/r{record.get('rollout', 0)}"


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


def _metrics(record: Record) -> dict[str, float]:
    return {k: v for k, v in (record.get("metrics") or {}).items() if is_finite_number(v)}


def ref_limit() -> int:
    """How many references a finding keeps: MAX_EXAMPLES, or all inside `every_reference()`."""
    return _REF_LIMIT.get()


@contextlib.contextmanager
def every_reference() -> Iterator[None]:
    """Findings made inside keep every flagged rollout's reference, not the first
    MAX_EXAMPLES (the live audit penalizes each flagged rollout). Per thread and task."""
    token = _REF_LIMIT.set(sys.maxsize)
    try:
        yield
    finally:
        _REF_LIMIT.reset(token)


def _refs(records: Sequence[Record]) -> tuple[str, ...]:
    return tuple(rollout_ref(r) for r in records[:ref_limit()])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _quote(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
