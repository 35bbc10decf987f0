"""`math_equal`: is a model's math answer equal to the gold one? math-verify, made safe for rubrics.

Why a helper rather than calling math-verify in each environment: math-verify's `parse`
and `verify` bound their run time with `signal.alarm`, which works only in the main
thread (elsewhere they raise ValueError, or with the error swallowed, score a right
answer as wrong) and which cancels any other SIGALRM timer of the process. Reward
functions run inside the event loop and may be moved to worker threads, so the signal
timeouts are turned off here (`parsing_timeout=None`, `timeout_seconds=None`), and the
inputs that would make sympy run for ever are refused instead: over-long answers, and
huge powers or factorials (`10^{10^{10}}` alone hangs the comparison).

The prediction is read as one math expression (it is an answer already taken out of its
tags, not prose): plain text is wrapped in `$...$`, so `3/4`, `\\frac{3}{4}` and `0.75`
agree and `12.0` equals `12`; text that has its own delimiters (`$`, `\\(`, `\\[`,
`\\boxed`) is parsed as it is. Numbers agree to math-verify's default 6 decimal places.
"""

from __future__ import annotations

import logging

import math_verify
import sympy

MAX_ANSWER_CHARS = 256  # longer predictions are not answers, and cost sympy time
MAX_EXPONENT = 10_000  # larger exponents (or nested towers) are refused before sympy expands them
MAX_FACTORIAL = 1_000

_DELIMITERS = ("$", "\\(", "\\[", "\\boxed")


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns that its timeouts are off; here that is deliberate (see above)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def _as_latex(text: str) -> str:
    text = text.strip()
    return text if any(d in text for d in _DELIMITERS) else f"${text}$"


def _parse(text: str) -> list:
    return math_verify.parse(_as_latex(text), parsing_timeout=None) or math_verify.parse(
        text, parsing_timeout=None
    )


def _too_big(value: sympy.Basic, limit: int) -> bool:
    """True unless `value` is a number whose magnitude is at most `limit`."""
    try:
        return not value.is_number or bool(abs(value.evalf(5)) > limit)
    except Exception:  # an expression sympy cannot even estimate is not a safe one
        return True


def _is_tame(parsed: list) -> bool:
    """False when evaluating the parsed prediction could take sympy unbounded time."""
    for item in parsed:
        if not isinstance(item, sympy.Basic):
            continue
        for node in sympy.preorder_traversal(item):
            if isinstance(node, sympy.Pow) and not node.exp.free_symbols and _too_big(node.exp, MAX_EXPONENT):
                return False
            if isinstance(node, sympy.factorial) and _too_big(node.args[0], MAX_FACTORIAL):
                return False
    return True


def math_equal(prediction: str | None, gold: str) -> bool:
    """True when `prediction` is mathematically equal to `gold` (a trusted LaTeX or plain
    number, e.g. "12", "0.75", "\\frac{7}{3}"). Never raises for any prediction text."""
    if prediction is None or not prediction.strip() or len(prediction) > MAX_ANSWER_CHARS:
        return False
    gold_parsed = _parse(gold)
    if not gold_parsed:
        raise ValueError(f"math_equal: cannot parse the gold answer {gold!r}")
    try:
        predicted = _parse(prediction)
        if not predicted or not _is_tame(predicted):
            return False
        return bool(math_verify.verify(gold_parsed, predicted, timeout_seconds=None))
    except Exception:  # math-verify already swallows its own errors; this is belt and braces
        return False
