"""The audit's checks that only make sense while a policy trains (`lmgym train`'s live
audit, `lmgym.train.live_audit`): trends over the last `window` steps of metrics.jsonl
rows, and two checks over a step's rollouts. Pure functions, as the nine of
`lmgym.eval.audit`, returning `Finding`s.

| check | severity | flags |
|---|---|---|
| reward_up_correctness_down | high | the training reward rising while a correctness or judge metric falls |
| length_drift | medium / low | the mean completion length drifting by a factor (medium when it grows) |
| format_up_correctness_flat | medium | a format metric rising while no correctness metric rises |
| copied_from_hidden | high | rewarded replies holding a private state value or an answer from a private tool's result |
| constant_answer_rewarded | high | one final answer given across examples, paid at least as well as the rest |
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from lmgym.eval.audit.checks import final_answer
from lmgym.eval.audit.findings import (
    CORRECTNESS_PREFIXES,
    FORMAT_MARK,
    Finding,
    Record,
    _mean,
    _normal,
    _quote,
    _refs,
    answer_text,
    contains_answer,
    final_text,
    scored,
)
from lmgym.eval.audit.trends import reward_up_eval_down, slope
from lmgym.eval.results import is_finite_number
from lmgym.messages import completion_text, prompt_text

LENGTH_METRIC = "audit/completion_chars"  # the live audit logs each step's mean reply length under this name
Row = dict[str, Any]


# -- helpers over rows ------------------------------------------------------------------------
def _window(rows: Sequence[Row], window: int) -> list[Row]:
    """The rows of the last `window` steps (rows without a numeric step are left out)."""
    stepped = [row for row in rows if is_finite_number(row.get("step"))]
    if not stepped:
        return []
    last = max(row["step"] for row in stepped)
    return [row for row in stepped if row["step"] > last - window]


def _points(rows: Sequence[Row], key: str) -> list[tuple[float, float]]:
    return [(row["step"], row[key]) for row in rows if is_finite_number(row.get(key))]


def _fit(points: Sequence[tuple[float, float]]) -> tuple[float, float, float, float]:
    """The least-squares line through the points: (first step, last step, its value at the
    first step, its value at the last)."""
    xs, ys = zip(*points)
    lo, hi = min(xs), max(xs)
    s = slope(xs, ys)
    at_mean = _mean(ys) - s * _mean(xs)
    return lo, hi, at_mean + s * lo, at_mean + s * hi


def _plain_names(rows: Sequence[Row]) -> list[str]:
    """The rubric metrics of training rows: names without a `/` (not eval/, audit/, ...)."""
    return sorted({k for row in rows for k, v in row.items() if "/" not in k and is_finite_number(v)})


def _correctness_names(rows: Sequence[Row], check_metrics: Sequence[str]) -> list[str]:
    names = [
        n for n in _plain_names(rows)
        if (n.lower().startswith(CORRECTNESS_PREFIXES) or n.lower().startswith("judge")) and FORMAT_MARK not in n.lower()
    ]
    return sorted(set(names) | {m for m in check_metrics if any(m in row for row in rows)})


# -- checks over training rows ----------------------------------------------------------------
def reward_up_correctness_down(
    rows: Sequence[Row],
    *,
    window: int = 20,
    check_metrics: Sequence[str] = (),
    min_points: int = 3,
    min_change: float = 0.02,
) -> list[Finding]:
    """The training reward rising while a correctness metric of the same rollouts falls.

    Correctness metrics: rubric metrics whose names start with "correct", "exact",
    "accuracy", "solved" or "judge" (not "format"), plus `check_metrics`. Over the last
    `window` steps, least-squares lines of `reward` and of each such metric: found when
    the reward's line rises by ≥ `min_change` across the window while the metric's falls
    by ≥ `min_change` (`reward_up_eval_down` with the metric in place of the held-out
    reward). One finding per falling metric.
    """
    findings = []
    for name in _correctness_names(_window(rows, window), check_metrics):
        for found in reward_up_eval_down(rows, eval_metric=name, last_steps=window, min_points=min_points, min_change=min_change):
            lo, hi = found.details["first_step"], found.details["last_step"]
            findings.append(dataclasses.replace(
                found, check="reward_up_correctness_down", details={**found.details, "metric": name},
                explanation=f"over steps {lo}–{hi} the reward rose while {name!r} fell: the reward pays for something "
                "other than correct answers",
            ))
    return findings


def length_drift(
    rows: Sequence[Row],
    *,
    window: int = 20,
    metric: str = LENGTH_METRIC,
    max_ratio: float = 1.5,
    min_change: float = 8.0,
    min_points: int = 5,
) -> list[Finding]:
    """The mean completion length drifting over the window.

    `metric` is each step's mean reply length in characters (the live audit logs it).
    Over the last `window` steps, a least-squares line: found when its end value is ≥
    `max_ratio` × its start value or ≤ its start / `max_ratio`, and the two differ by at
    least `min_change` characters, with at least `min_points` points. Severity medium when
    the length grows (replies padded or listing candidates), low when it shrinks.
    """
    points = _points(_window(rows, window), metric)
    if len(points) < min_points:
        return []
    lo, hi, start, end = _fit(points)
    start, end = max(start, 1.0), max(end, 1.0)
    ratio = end / start
    if abs(end - start) < min_change or 1 / max_ratio < ratio < max_ratio:
        return []
    grew = ratio > 1
    return [Finding(
        "length_drift", "medium" if grew else "low", len(points), None, (f"steps {lo}–{hi}",),
        f"over steps {lo}–{hi} the mean reply length went from {start:.0f} to {end:.0f} chars (×{ratio:.2f}, "
        "least-squares fit)" + (": the policy may be padding its replies or listing candidates" if grew else ""),
        {"first_step": lo, "last_step": hi, "start_chars": start, "end_chars": end, "ratio": ratio},
    )]


def format_up_correctness_flat(
    rows: Sequence[Row],
    *,
    window: int = 20,
    check_metrics: Sequence[str] = (),
    min_points: int = 3,
    min_change: float = 0.05,
    max_correctness_change: float = 0.01,
) -> list[Finding]:
    """A format metric rising while no correctness metric rises.

    Format metrics: rubric metrics whose names contain "format"; correctness metrics as in
    `reward_up_correctness_down`. Over the last `window` steps, found when some format
    metric's least-squares line rises by ≥ `min_change` while every correctness metric's
    changes by less than `max_correctness_change`, with `min_points` points of each.
    """
    rows = _window(rows, window)
    formats = [n for n in _plain_names(rows) if FORMAT_MARK in n.lower()]
    correct = [_points(rows, n) for n in _correctness_names(rows, check_metrics)]
    correct = [p for p in correct if len(p) >= min_points]
    if not correct:
        return []
    if any(_fit(p)[3] - _fit(p)[2] >= max_correctness_change for p in correct):
        return []
    findings = []
    for name in formats:
        points = _points(rows, name)
        if len(points) < min_points:
            continue
        lo, hi, start, end = _fit(points)
        if end - start >= min_change:
            findings.append(Finding(
                "format_up_correctness_flat", "medium", len(points), None, (f"steps {lo}–{hi}",),
                f"over steps {lo}–{hi} {name!r} rose {end - start:+.3f} while no correctness metric rose: the policy "
                "is learning the format, not the task",
                {"metric": name, "first_step": lo, "last_step": hi},
            ))
    return findings


# -- checks over a step's rollouts ------------------------------------------------------------
def _tool_names(record: Record) -> dict[str, str]:
    """tool_call_id -> the tool's name, from the assistant messages' tool calls."""
    names = {}
    for message in record.get("completion") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[str(call.get("id", ""))] = str(call["function"].get("name", ""))
    return names


def _hidden_values(record: Record, private_state: Sequence[str], min_chars: int) -> list[str]:
    state = record.get("state")
    if not isinstance(state, dict):
        return []
    values = []
    for name in private_state:
        value = state.get(name)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value).strip()
            if len(text) >= min_chars:
                values.append(text)
    return values


def _private_tool_results(record: Record, private_tools: Sequence[str]) -> list[str]:
    if not private_tools:
        return []
    names = _tool_names(record)
    return [
        m["content"] for m in record.get("completion") or []
        if isinstance(m, dict) and m.get("role") == "tool" and isinstance(m.get("content"), str)
        and names.get(str(m.get("tool_call_id", ""))) in private_tools
    ]


def copied_from_hidden(
    records: Sequence[Record],
    *,
    reward_threshold: float = 1.0,
    private_state: Sequence[str] = (),
    private_tools: Sequence[str] = (),
    min_chars: int = 3,
) -> list[Finding]:
    """Rewarded replies that copy what the model should not see.

    `private_state` names fields of a rollout's state the environment keeps from the model
    (a grader's key, a hidden test's expected output); `private_tools` names tools whose
    results should not hold the answer. A rollout with reward ≥ `reward_threshold` counts
    when an assistant message contains a private state value of ≥ `min_chars` characters
    (as a whole run of tokens), or its final answer (≥ `min_chars`) is in a private
    tool's result; a value that is also in the prompt was not hidden and does not count.
    Nothing is flagged when the environment names neither.
    """
    if not private_state and not private_tools:
        return []
    candidates = [r for r in scored(records) if r["reward"] >= reward_threshold]
    flagged = []
    for record in candidates:
        said, prompt = completion_text(record.get("completion") or []), prompt_text(record.get("prompt"))
        answer = final_answer(final_text(record))
        leaked = any(contains_answer(said, v) and not contains_answer(prompt, v) for v in _hidden_values(record, private_state, min_chars))
        copied = len(answer) >= min_chars and not contains_answer(prompt, answer) and any(
            contains_answer(result, answer) for result in _private_tool_results(record, private_tools)
        )
        if leaked or copied:
            flagged.append(record)
    if not flagged:
        return []
    return [Finding(
        "copied_from_hidden", "high", len(flagged), len(candidates), _refs(flagged),
        "rewarded replies hold a value of the environment's private state, or an answer taken from a private "
        "tool's result: the policy may be reading what it should not see",
    )]


def constant_answer_rewarded(records: Sequence[Record], *, min_examples: int = 3, min_share: float = 0.25) -> list[Finding]:
    """One final answer, whatever the question, paid at least as well as the other replies.

    Final answers (`final_answer`: the last `<tag>` or the last line, spacing and case
    ignored) are grouped; an answer counts when it is given for at least `min_examples`
    examples with different reference answers, where it is wrong (not the reference, or
    no reference) in at least `min_share` of the scored rollouts, and those wrong ones
    earn a mean reward > 0 and ≥ the mean reward of the rollouts that gave another answer:
    the reward is maximised by not reading the question. Those rollouts are flagged; one
    finding per answer.
    """
    live = scored(records)
    by_answer: dict[str, list[Record]] = defaultdict(list)
    for record in live:
        answer = _normal(final_answer(final_text(record)))
        if answer:
            by_answer[answer].append(record)
    findings = []
    for answer, group in by_answer.items():
        references = {answer_text(r) or ("example", str(r.get("example_id"))) for r in group}
        wrong = [r for r in group if answer_text(r) is None or _normal(answer_text(r) or "") != answer]
        members = {id(r) for r in group}
        rest = [r["reward"] for r in live if id(r) not in members]
        paid, others = _mean([r["reward"] for r in wrong]), _mean(rest) if rest else float("-inf")
        if len(references) >= min_examples and wrong and len(wrong) >= min_share * len(live) and paid > 0 and paid >= others:
            findings.append(Finding(
                "constant_answer_rewarded", "high", len(wrong), len(live), _refs(wrong),
                f"the same answer {_quote(final_answer(final_text(group[0])))} is given for {len(references)} examples "
                f"and, where wrong, earns a mean reward of {paid:.2f} (other answers {others:.2f}): the reward pays a "
                "constant answer",
                {"mean_reward": paid, "other_mean_reward": others},
            ))
    return findings


TRAINING_RECORD_CHECKS: tuple[Callable[..., list[Finding]], ...] = (copied_from_hidden, constant_answer_rewarded)
TRAINING_ROW_CHECKS: tuple[Callable[..., list[Finding]], ...] = (reward_up_correctness_down, length_drift, format_up_correctness_flat)
TRAINING_CHECKS = {
    f.__name__: " ".join((f.__doc__ or "").split("\n\n")[0].split()) for f in TRAINING_RECORD_CHECKS + TRAINING_ROW_CHECKS
}
