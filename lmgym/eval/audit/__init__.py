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

Five more checks only make sense while a policy trains, and run in `lmgym train`'s live
audit (`lmgym.train.live_audit`), not in `lmgym audit`: see `lmgym.eval.audit.training`
(reward up while correctness falls, length drift, format up without correctness, replies
copied from private state or a private tool, a rewarded constant answer).

Only scored rollouts (no error, a numeric reward) are audited: a failed rollout has no
reward to game. The files are read without being modified, so a run still being written
can be audited (`read_results` would repair a torn last line on disk, racing the writer).
"""

from lmgym.eval.audit.checks import (
    RECORD_CHECKS,
    check_metric_disagrees,
    constant_answer,
    copied_from_prompt,
    final_answer,
    format_without_correctness,
    identical_group_completions,
    length_outliers,
    repetition,
    reward_without_answer,
)
from lmgym.eval.audit.findings import AUDIT_FILE, Finding, answer_text, contains_answer, every_reference, final_text, scored
from lmgym.eval.audit.run import CHECKS, AuditReport, audit, audit_run
from lmgym.eval.audit.training import (
    TRAINING_CHECKS,
    TRAINING_RECORD_CHECKS,
    TRAINING_ROW_CHECKS,
    constant_answer_rewarded,
    copied_from_hidden,
    format_up_correctness_flat,
    length_drift,
    reward_up_correctness_down,
)
from lmgym.eval.audit.trends import METRICS_CHECKS, reward_up_eval_down, slope
from lmgym.eval.results import read_jsonl

__all__ = [
    "AUDIT_FILE", "CHECKS", "METRICS_CHECKS", "RECORD_CHECKS", "TRAINING_CHECKS", "TRAINING_RECORD_CHECKS",
    "TRAINING_ROW_CHECKS", "AuditReport", "Finding", "answer_text", "audit", "audit_run", "check_metric_disagrees",
    "constant_answer", "constant_answer_rewarded", "contains_answer", "copied_from_hidden", "copied_from_prompt",
    "every_reference", "final_answer", "final_text", "format_up_correctness_flat", "format_without_correctness",
    "identical_group_completions", "length_drift", "length_outliers", "read_jsonl", "repetition",
    "reward_up_correctness_down", "reward_up_eval_down", "reward_without_answer", "scored", "slope",
]
