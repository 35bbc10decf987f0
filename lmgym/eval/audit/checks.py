"""The audit's checks over the rollouts of results.jsonl: one small pure function per
pattern of reward gaming (see the table in `lmgym.eval.audit`)."""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from lmgym.eval.audit.findings import (
    CORRECTNESS_PREFIXES,
    FORMAT_MARK,
    Finding,
    Record,
    _mean,
    _metrics,
    _normal,
    _quote,
    _refs,
    answer_text,
    contains_answer,
    final_text,
    ref_limit,
    scored,
)
from lmgym.rubrics.guards import (
    completion_text,
    ngrams,
    prompt_overlap,
    prompt_text,
    repeated_ngram_fraction,
    words,
)


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
        "identical_group_completions", "low", len(flagged), len(multi), tuple(str(e) for e in flagged[:ref_limit()]),
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


RECORD_CHECKS: tuple[Callable[..., list[Finding]], ...] = (
    reward_without_answer, check_metric_disagrees, copied_from_prompt, format_without_correctness,
    length_outliers, repetition, identical_group_completions, constant_answer,
)
