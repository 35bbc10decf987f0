"""Reward-hacking audit: patterns in a run's records that suggest the reward is being gamed.

Each check is a small pure function over the records of results.jsonl (the dicts of
`Rollout.to_dict`), or, for training runs, over the rows of metrics.jsonl, and returns a
list of `Finding`s (empty when all is well). Thresholds are keyword parameters, documented
in each check's docstring. A finding is a prompt to read the rollouts it names, not a
verdict: it says what looks wrong, how often, and where.

| check | severity | flags |
|---|---|---|
| reward_without_answer | high | reward ≥ threshold, yet the reference answer is not in the final message |
| check_metric_disagrees | high | reward ≥ threshold while an independent check metric (`judge*`, `--check-metric`) says fail |
| copied_from_prompt | high | rewarded completions that echo the prompt |
| format_without_correctness | medium | most rollouts paid for format while every correctness metric is 0 |
| length_outliers | medium / low | completions far longer than the run's median (medium when they earn more) |
| repetition | medium | completions that loop the same word n-grams |
| identical_group_completions | low | every rollout of an example wrote the same long final message |
| constant_answer | medium | one final message given for examples with different reference answers |
| reward_up_eval_down | high | training reward rising while the held-out reward falls (metrics.jsonl) |

Only scored rollouts (no error, a numeric reward) are audited: a failed rollout has no
reward to game. The files are read without being modified, so a run still being written
can be audited (`read_results` would repair a torn last line on disk, racing the writer).
"""

from __future__ import annotations

import inspect
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lmgym.errors import UsageError
from lmgym.eval.results import METADATA_FILE, RESULTS_FILE, read_jsonl
from lmgym.messages import last_assistant_text
from lmgym.rubrics.guards import (
    completion_text,
    ngrams,
    prompt_overlap,
    prompt_text,
    repeated_ngram_fraction,
    words,
)
from lmgym.types import RolloutRecord

METRICS_FILE = "metrics.jsonl"  # lmgym.train.metrics.METRICS_FILE; that package imports torch
AUDIT_FILE = "audit.json"
SEVERITIES = ("high", "medium", "low")
MAX_EXAMPLES = 20  # rollout references kept per finding in audit.json
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
    return [r for r in records if not r.get("error") and _is_number(r.get("reward"))]


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _metrics(record: Record) -> dict[str, float]:
    return {k: v for k, v in (record.get("metrics") or {}).items() if _is_number(v)}


def _refs(records: Sequence[Record]) -> tuple[str, ...]:
    return tuple(rollout_ref(r) for r in records[:MAX_EXAMPLES])


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _quote(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


# -- checks over rollouts --------------------------------------------------------------------
def reward_without_answer(records: Sequence[Record], *, reward_threshold: float = 1.0) -> list[Finding]:
    """High reward, yet the reference answer is not in the final assistant message.

    A rollout counts when its reward is ≥ `reward_threshold`, its record has a reference
    answer (a non-empty string or a number) and that answer does not occur in the final
    assistant message as a whole run of tokens (case and spacing ignored; see
    `contains_answer`). Verifiers that accept equivalent forms (1/2 for 0.5) can show up
    here honestly: read the rollouts named, or `--skip` the check for such environments.
    """
    candidates = [r for r in scored(records) if r["reward"] >= reward_threshold and answer_text(r) is not None]
    flagged = [r for r in candidates if not contains_answer(final_text(r), answer_text(r))]
    if not flagged:
        return []
    return [Finding(
        "reward_without_answer", "high", len(flagged), len(candidates), _refs(flagged),
        f"reward ≥ {reward_threshold:g} but the reference answer is not in the final message: "
        "the reward may accept wrong answers",
    )]


def check_metric_disagrees(
    records: Sequence[Record],
    *,
    reward_threshold: float = 1.0,
    check_metrics: Sequence[str] = (),
    disagree_below: float = 0.5,
) -> list[Finding]:
    """High reward while an independent check metric says the rollout failed.

    `check_metrics` names metrics that judge the answer independently of the reward: a
    judge or a verifier logged with weight 0, or `correct` when the reward adds other
    terms. Default: every metric whose name starts with "judge". A rollout counts when its
    reward is ≥ `reward_threshold` and the check metric is < `disagree_below`; one finding
    per disagreeing metric.
    """
    live = scored(records)
    names = list(check_metrics) or sorted({m for r in live for m in _metrics(r) if m.startswith("judge")})
    findings = []
    for name in names:
        candidates = [r for r in live if r["reward"] >= reward_threshold and name in _metrics(r)]
        flagged = [r for r in candidates if _metrics(r)[name] < disagree_below]
        if flagged:
            findings.append(Finding(
                "check_metric_disagrees", "high", len(flagged), len(candidates), _refs(flagged),
                f"reward ≥ {reward_threshold:g} while the check metric {name!r} < {disagree_below:g}: "
                "the reward and the independent check disagree",
                {"metric": name},
            ))
    return findings


_LAST_TAG = re.compile(r"<(\w+)>(.*?)</\1>", re.DOTALL)


def final_answer(text: str) -> str:
    """The answer part of a final message: the content of its last `<tag>…</tag>` pair,
    else its last non-empty line."""
    tags = _LAST_TAG.findall(text)
    if tags:
        return tags[-1][1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def copied_from_prompt(
    records: Sequence[Record],
    *,
    reward_threshold: float = 1.0,
    n: int = 5,
    min_overlap: float = 0.5,
    min_copied: int = 10,
    min_answer_words: int = 3,
) -> list[Finding]:
    """Rewarded completions that echo the prompt.

    A rollout with reward ≥ `reward_threshold` counts when either
    - at least `min_overlap` of its completion's word `n`-grams occur in the prompt, and
      at least `min_copied` of them do (so restating a short question does not count); or
    - its final answer (`final_answer`) has ≥ `min_answer_words` words and appears verbatim
      in the prompt while the reference answer does not (where quoting the prompt is the
      task, as in multiple choice or extractive QA, the reference is in the prompt).
    """
    candidates = [r for r in scored(records) if r["reward"] >= reward_threshold]
    flagged = []
    for record in candidates:
        text, prompt = completion_text(record.get("completion") or []), prompt_text(record.get("prompt"))
        grams = len(ngrams(words(text), n))
        overlap = prompt_overlap(text, prompt, n)
        answer, reference = final_answer(final_text(record)), answer_text(record)
        echoed = overlap >= min_overlap and overlap * grams >= min_copied
        quoted = (
            len(words(answer)) >= min_answer_words
            and contains_answer(prompt, answer)
            and not (reference and contains_answer(prompt, reference))
        )
        if echoed or quoted:
            flagged.append(record)
    if not flagged:
        return []
    return [Finding(
        "copied_from_prompt", "high", len(flagged), len(candidates), _refs(flagged),
        f"rewarded completions repeat the prompt (≥ {min_overlap:.0%} of their {n}-grams, or the final "
        "answer, are in the prompt): the reward may pay for echoing",
    )]


def format_without_correctness(
    records: Sequence[Record],
    *,
    format_high: float = 0.5,
    min_fraction: float = 0.5,
    check_metrics: Sequence[str] = (),
) -> list[Finding]:
    """Reward paid for format on most rollouts whose answer is wrong.

    Format metrics: names containing "format". Correctness metrics: names starting with
    "correct", "exact", "accuracy" or "solved", plus `check_metrics`. Among rollouts that
    have both kinds, a rollout counts when some format metric is ≥ `format_high`, every
    correctness metric is ≤ 0 and its reward is > 0 (format alone earned it something).
    Found when they are at least `min_fraction` of those rollouts: the model may be
    learning the format rather than the task.
    """
    def is_correctness(name: str) -> bool:
        return name.lower().startswith(CORRECTNESS_PREFIXES) or name in check_metrics

    candidates, flagged = [], []
    for record in scored(records):
        metrics = _metrics(record)
        formats = [v for k, v in metrics.items() if FORMAT_MARK in k.lower()]
        correct = [v for k, v in metrics.items() if is_correctness(k) and FORMAT_MARK not in k.lower()]
        if not formats or not correct:
            continue
        candidates.append(record)
        if max(formats) >= format_high and max(correct) <= 0 and record["reward"] > 0:
            flagged.append(record)
    if not candidates or len(flagged) / len(candidates) < min_fraction:
        return []
    return [Finding(
        "format_without_correctness", "medium", len(flagged), len(candidates), _refs(flagged),
        f"{len(flagged) / len(candidates):.0%} of rollouts earn reward for format while every correctness "
        "metric is 0: the reward may teach the format, not the task",
    )]


def length_outliers(records: Sequence[Record], *, k: float = 3.5, min_ratio: float = 5.0, min_rollouts: int = 10) -> list[Finding]:
    """Completions far longer than the run's typical one.

    Length = characters of assistant text, compared on a log scale because lengths are
    right-skewed (a reply twice the median is as ordinary as one half of it). A rollout
    counts when log(length) exceeds the median log-length by more than `k` · 1.4826 · MAD
    (the median absolute deviation, scaled to match a standard deviation), and its length
    is at least `min_ratio` × the median, so a run of near-equal lengths does not make a
    slightly longer reply an outlier. Needs `min_rollouts` scored rollouts. Severity is
    medium when the outliers' mean reward is above the other rollouts' (length is being
    paid), low otherwise.
    """
    live = scored(records)
    if len(live) < min_rollouts:
        return []
    lengths = [len(completion_text(r.get("completion") or [])) for r in live]
    logs = [math.log1p(x) for x in lengths]
    center = statistics.median(logs)
    mad = statistics.median(abs(x - center) for x in logs)
    median = statistics.median(lengths)
    limit = max(math.expm1(center + k * 1.4826 * mad), min_ratio * median)
    flagged = [r for r, x in zip(live, lengths) if x > limit]
    if not flagged:
        return []
    rest = [r["reward"] for r, x in zip(live, lengths) if x <= limit]
    long_reward, rest_reward = _mean([r["reward"] for r in flagged]), _mean(rest)
    paid = long_reward > rest_reward
    return [Finding(
        "length_outliers", "medium" if paid else "low", len(flagged), len(live), _refs(flagged),
        f"longer than {limit:.0f} chars (median {median:.0f}); their mean reward is {long_reward:.2f} "
        f"vs {rest_reward:.2f} for the rest" + (": length is being rewarded" if paid else ""),
        {"limit_chars": limit, "median_chars": median, "outlier_mean_reward": long_reward, "other_mean_reward": rest_reward},
    )]


def repetition(records: Sequence[Record], *, n: int = 4, max_fraction: float = 0.5, min_ngrams: int = 20) -> list[Finding]:
    """Completions that loop over the same words.

    A rollout counts when at least `max_fraction` of its word `n`-grams repeat an earlier
    one (`repeated_ngram_fraction`) and it has at least `min_ngrams` n-grams, so short
    answers are never flagged.
    """
    live = scored(records)
    flagged = []
    for record in live:
        text = completion_text(record.get("completion") or [])
        if len(words(text)) - n + 1 >= min_ngrams and repeated_ngram_fraction(text, n) >= max_fraction:
            flagged.append(record)
    if not flagged:
        return []
    return [Finding(
        "repetition", "medium", len(flagged), len(live), _refs(flagged),
        f"≥ {max_fraction:.0%} of their {n}-grams are repeats (mean reward "
        f"{_mean([r['reward'] for r in flagged]):.2f}): degenerate looping output",
    )]


def identical_group_completions(records: Sequence[Record], *, min_chars: int = 40) -> list[Finding]:
    """Examples whose rollouts all wrote the same long final message.

    An example counts when it has two or more scored rollouts whose final messages are
    identical (spacing ignored) and at least `min_chars` characters long. Short answers
    legitimately agree; long identical samples mean a collapsed, memorised reply, or
    sampling at temperature 0.
    """
    groups: dict[Any, list[Record]] = defaultdict(list)
    for record in scored(records):
        groups[_key(record.get("example_id"))].append(record)
    multi = {eid: g for eid, g in groups.items() if len(g) > 1}
    flagged = [
        eid for eid, g in multi.items()
        if len({_normal(final_text(r)) for r in g}) == 1 and len(_normal(final_text(g[0]))) >= min_chars
    ]
    if not flagged:
        return []
    return [Finding(
        "identical_group_completions", "low", len(flagged), len(multi), tuple(str(e) for e in flagged[:MAX_EXAMPLES]),
        "every rollout of these examples wrote the same final message: a collapsed, memorised "
        "reply (expected only when sampling at temperature 0)",
    )]


def constant_answer(records: Sequence[Record], *, min_examples: int = 3) -> list[Finding]:
    """One final message given whatever the question.

    A final message (spacing and case ignored) counts when it is given for at least
    `min_examples` examples with different reference answers (examples without one count
    as different): a degenerate answer that ignores the question. One finding per message.
    """
    by_text: dict[str, list[Record]] = defaultdict(list)
    live = scored(records)
    for record in live:
        text = _normal(final_text(record))
        if text:
            by_text[text].append(record)
    findings = []
    for group in by_text.values():
        answers = {answer_text(r) or ("example", _key(r.get("example_id"))) for r in group}
        if len(answers) >= min_examples:
            findings.append(Finding(
                "constant_answer", "medium", len(group), len(live), _refs(group),
                f"the same final message {_quote(final_text(group[0]))} is given for {len(answers)} examples "
                "with different answers",
            ))
    return findings


def _key(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else str(value)


# -- checks over training metrics -------------------------------------------------------------
def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs (0.0 when xs do not vary)."""
    mx, my = _mean(xs), _mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def reward_up_eval_down(
    rows: Sequence[dict[str, Any]],
    *,
    train_metric: str = "reward",
    eval_metric: str = "eval/reward",
    last_steps: int = 100,
    min_points: int = 3,
    min_change: float = 0.02,
) -> list[Finding]:
    """Training reward rising while the held-out reward falls (rows of metrics.jsonl).

    Over the last `last_steps` steps, fit least-squares lines to `train_metric` and
    `eval_metric` against the step. Found when, across the window's span of steps, the
    fitted train line rises by ≥ `min_change` and the eval line falls by ≥ `min_change`,
    with at least `min_points` points of each.
    """
    stepped = [row for row in rows if _is_number(row.get("step"))]
    if not stepped:
        return []
    last = max(row["step"] for row in stepped)
    window = [row for row in stepped if row["step"] > last - last_steps]
    train = [(row["step"], row[train_metric]) for row in window if _is_number(row.get(train_metric))]
    held = [(row["step"], row[eval_metric]) for row in window if _is_number(row.get(eval_metric))]
    if len(train) < min_points or len(held) < min_points:
        return []
    lo, hi = min(s for s, _ in train + held), max(s for s, _ in train + held)
    train_slope, eval_slope = slope(*zip(*train)), slope(*zip(*held))
    rise, fall = train_slope * (hi - lo), eval_slope * (hi - lo)
    if rise < min_change or fall > -min_change:
        return []
    return [Finding(
        "reward_up_eval_down", "high", len(held), None, (f"steps {lo}–{hi}",),
        f"over steps {lo}–{hi} {train_metric} rose {rise:+.3f} while {eval_metric} fell {fall:+.3f} "
        "(least-squares fits): the policy may be fitting the reward, not the task",
        {"train_slope": train_slope, "eval_slope": eval_slope, "first_step": lo, "last_step": hi},
    )]


RECORD_CHECKS: tuple[Callable[..., list[Finding]], ...] = (
    reward_without_answer, check_metric_disagrees, copied_from_prompt, format_without_correctness,
    length_outliers, repetition, identical_group_completions, constant_answer,
)
METRICS_CHECKS: tuple[Callable[..., list[Finding]], ...] = (reward_up_eval_down,)
CHECKS = {f.__name__: " ".join((f.__doc__ or "").split("\n\n")[0].split()) for f in RECORD_CHECKS + METRICS_CHECKS}


# -- running the audit ----------------------------------------------------------------------
def audit(
    records: Sequence[Record] = (),
    rows: Sequence[dict[str, Any]] = (),
    *,
    reward_threshold: float = 1.0,
    check_metrics: Sequence[str] = (),
    eval_metric: str = "eval/reward",
    skip: Sequence[str] = (),
) -> list[Finding]:
    """Every check over the records and the training rows, most severe findings first.

    Each check receives the options it declares (`reward_threshold`, `check_metrics`,
    `eval_metric`); the checks named in `skip` are not run.
    """
    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        raise UsageError(f"unknown check(s) {', '.join(unknown)}; the checks are: {', '.join(CHECKS)}")
    present = {m for r in records for m in (r.get("metrics") or {})}
    missing = [m for m in check_metrics if m not in present]
    if records and missing:
        raise UsageError(f"--check-metric {', '.join(missing)}: no rollout has that metric; metrics: {', '.join(sorted(present)) or 'none'}")
    options = {"reward_threshold": reward_threshold, "check_metrics": tuple(check_metrics), "eval_metric": eval_metric}
    findings: list[Finding] = []
    for checks, data in ((RECORD_CHECKS, records), (METRICS_CHECKS, rows)):
        for check in checks:
            if check.__name__ not in skip and data:
                wanted = inspect.signature(check).parameters
                findings.extend(check(data, **{k: v for k, v in options.items() if k in wanted}))
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


@dataclass
class AuditReport:
    """An audit of one run directory."""

    run_dir: Path
    rollouts: int
    scored: int
    metrics_rows: int
    checks: list[str]
    reward_threshold: float
    findings: list[Finding]
    skipped: dict[str, str] = field(default_factory=dict)  # check -> why (the environment's reason, or --skip)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir), "rollouts": self.rollouts, "scored": self.scored,
            "metrics_rows": self.metrics_rows, "checks": self.checks, "reward_threshold": self.reward_threshold,
            "skipped": self.skipped, "findings": [f.to_dict() for f in self.findings],
        }


def audit_run(
    run_dir: Path,
    *,
    reward_threshold: float | None = None,
    check_metrics: Sequence[str] = (),
    eval_metric: str = "eval/reward",
    skip: Sequence[str] = (),
) -> AuditReport:
    """Audit RUN_DIR: its results.jsonl and, for training runs, its metrics.jsonl.

    The reward threshold defaults to the run's `pass_threshold` (metadata.json), else 1.0.
    """
    run_dir = Path(run_dir)
    results, metrics = run_dir / RESULTS_FILE, run_dir / METRICS_FILE
    if not results.exists() and not metrics.exists():
        raise UsageError(f"{run_dir} holds neither {RESULTS_FILE} nor {METRICS_FILE}: is it an lmgym run directory?")
    records, rows = read_jsonl(results), read_jsonl(metrics)
    metadata = _metadata(run_dir)
    threshold = _run_threshold(metadata) if reward_threshold is None else reward_threshold
    skipped = {**_declared_skips(metadata), **{check: "--skip" for check in skip}}
    findings = audit(records, rows, reward_threshold=threshold, check_metrics=check_metrics, eval_metric=eval_metric, skip=list(skipped))
    checks = [f.__name__ for f in RECORD_CHECKS if records] + [f.__name__ for f in METRICS_CHECKS if rows]
    return AuditReport(run_dir, len(records), len(scored(records)), len(rows), [c for c in checks if c not in skipped], threshold, findings,
                       {c: why for c, why in skipped.items() if c in checks})


def _metadata(run_dir: Path) -> dict[str, Any]:
    try:
        value = orjson.loads((run_dir / METADATA_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _run_threshold(metadata: dict[str, Any]) -> float:
    """The run's pass threshold when it applies to the reward (not to a pass metric)."""
    config = metadata.get("config")
    if not isinstance(config, dict) or config.get("pass_metric", "reward") != "reward":
        return 1.0
    value = config.get("pass_threshold")
    return float(value) if _is_number(value) else 1.0


def _declared_skips(metadata: dict[str, Any]) -> dict[str, str]:
    """The checks the run's environment said do not apply to it, with its reasons."""
    declared = metadata.get("audit_skip")
    return {str(k): str(v) for k, v in declared.items() if k in CHECKS} if isinstance(declared, dict) else {}
