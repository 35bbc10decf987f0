"""Reading a judge model's verdict: yes/no, a numeric score, or a JSON object.

Judges are chatty: "**Yes.** The response is correct", "Score: 7/10", a JSON object in
a ```json fence after some reasoning. Each reader takes the *last* clear verdict (judges
reason first, conclude last) and raises `VerdictError` when there is none or when it is
ambiguous, so an unreadable verdict becomes a recorded rollout error, never a silent 0.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lmgym.errors import VerdictError

_YES = {"yes", "correct", "true", "pass", "passed", "y"}
_NO = {"no", "incorrect", "false", "fail", "failed", "wrong", "n"}
_VERDICT_LINE = re.compile(r"(?:verdict|answer|decision|judgement|judgment|grade)\s*[:=-]\s*\**\s*([a-z]+)", re.I)
_WORD = re.compile(r"[a-z]+", re.I)
_SCORE = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?))?")
_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)


def _excerpt(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def strip_reasoning(text: str) -> str:
    """The verdict, without a judge's <think> block."""
    return _THINK.sub(" ", text or "").strip()


def parse_yes_no(text: str) -> float:
    """1.0 for yes, 0.0 for no: a labelled verdict ("Verdict: yes") wins; otherwise the
    first or the last word must be a clear yes or no, and not contradicted by the other."""
    body = strip_reasoning(text)
    labelled = [m.group(1).lower() for m in _VERDICT_LINE.finditer(body)]
    labelled = [w for w in labelled if w in _YES | _NO]
    if labelled:
        return 1.0 if labelled[-1] in _YES else 0.0
    words = [w.lower() for w in _WORD.findall(body)]
    if not words:
        raise VerdictError(f"the judge gave no yes/no verdict: {_excerpt(text)!r}")
    ends = {words[0], words[-1]}
    said_yes, said_no = bool(ends & _YES), bool(ends & _NO)
    if said_yes == said_no:
        problem = "both yes and no" if said_yes else "neither yes nor no"
        raise VerdictError(f"the judge's verdict says {problem}: {_excerpt(text)!r}")
    return 1.0 if said_yes else 0.0


def parse_score(text: str, low: float = 0.0, high: float = 10.0) -> float:
    """The last number in the verdict ("7", "Score: 7/10", "7 out of 10"), scaled from
    [low, high] to [0, 1]. A number outside the range is an error, not clipped."""
    body = strip_reasoning(text).replace(" out of ", "/")
    matches = list(_SCORE.finditer(body))
    if not matches:
        raise VerdictError(f"the judge gave no numeric score: {_excerpt(text)!r}")
    value_text, scale_text = matches[-1].groups()
    value = float(value_text)
    if scale_text is not None and float(scale_text) != high:  # "4/5" on a 0–10 scale
        value = low + value / float(scale_text) * (high - low)
    if not low <= value <= high:
        raise VerdictError(f"the judge's score {value_text} is outside [{low:g}, {high:g}]: {_excerpt(text)!r}")
    return (value - low) / (high - low)


def parse_json(text: str) -> Any:
    """The last JSON object or array in the verdict, fenced or bare."""
    body = strip_reasoning(text)
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", body, re.S)
    candidates = [*reversed(fenced), body]
    for candidate in candidates:
        values = _json_values(candidate)
        if values:
            return values[-1]
    raise VerdictError(f"the judge's verdict holds no JSON object: {_excerpt(text)!r}")


def _json_values(text: str) -> list[Any]:
    """Every complete JSON object or array in `text`, left to right, none nested in another."""
    decoder, values, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position] in "{[":
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                position += 1
                continue
            values.append(value)
            position = end
        else:
            position += 1
    return values


def json_field(verdict: Any, key: str) -> Any:
    if not isinstance(verdict, dict) or key not in verdict:
        raise VerdictError(f"the judge's JSON verdict has no {key!r} field: {_excerpt(json.dumps(verdict))!r}")
    return verdict[key]
