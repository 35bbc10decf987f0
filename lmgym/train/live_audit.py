"""The reward-hacking audit inside `lmgym train`: the `[audit]` section of the config (one
concept, from its config to its actions: a few lines over 400, kept whole).

Every `audit.every` steps the audit's checks (the nine of `lmgym.eval.audit` and the five
training-only ones of `lmgym.eval.audit.training`) run on that step's rollouts, on the
trends of the last `audit.window` steps, and, at each evaluation, on the held-out
rollouts. Each check's flagged fraction, the share of the step's scored rollouts it
flags, goes to metrics.jsonl as `audit/<check>` (the held-out ones as `audit/eval/<check>`;
a trend check logs 1 when it finds its trend, else 0). A finding at or above `audit.min_fraction` is printed once, the first time it
appears (the step, the check, the fraction, an example rollout), and its step is logged as
`audit/onset/<check>` (which `lmgym view` marks on the curves). Then the check's action:

    warn       (the default) the line above, nothing more
    stop       the step is logged, a checkpoint is saved and training ends with AuditStopped
               (`lmgym train` exits with status 3), naming the check and the step
    penalize   before advantages are computed, each rollout the check flags gets the reward
               `audit.penalty`; counted as `audit/penalized`. The rollout checks are cheap and
               run on every batch, so a penalty applies to every step, not every `every`

The checks an environment declares inapplicable (`audit_skip`, as `lmgym audit` reads
them) and those in `audit.skip` do not run. An environment names state fields the model
must not see as `audit_private_state`, and tools whose results must not hold the answer as
`audit_private_tools` (attributes; `audit.private_state` / `private_tools` add more).

Where it runs: `Orchestrator` calls `LiveAudit.audit_batch` on each batch's scored groups
(the producer thread, under async), and `TrainingLoop` calls `after_step` with the step's
metrics (averaged over ranks, so every rank decides to stop alike) and `after_eval` with
the held-out records (rank 0; under torchrun an evaluation's finding warns, never stops).
"""

from __future__ import annotations

import inspect
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from lmgym.config import ConfigModel
from lmgym.errors import TrainingError, UsageError
from lmgym.eval.audit import (
    CHECKS,
    METRICS_CHECKS,
    RECORD_CHECKS,
    TRAINING_RECORD_CHECKS,
    TRAINING_ROW_CHECKS,
    Finding,
    audit,
    every_reference,
    final_text,
    read_jsonl,
    scored,
)
from lmgym.eval.audit.findings import METRICS_FILE, _quote, rollout_ref
from lmgym.eval.audit.training import LENGTH_METRIC
from lmgym.eval.results import is_finite_number
from lmgym.messages import completion_text

if TYPE_CHECKING:
    from lmgym.types import Rollout

logger = logging.getLogger(__name__)

Action = Literal["warn", "stop", "penalize"]
RECORD_CHECK_NAMES = tuple(f.__name__ for f in RECORD_CHECKS + TRAINING_RECORD_CHECKS)
ROW_CHECK_NAMES = tuple(f.__name__ for f in METRICS_CHECKS + TRAINING_ROW_CHECKS)
LIVE_CHECKS = RECORD_CHECK_NAMES + ROW_CHECK_NAMES
PREFIX, EVAL_PREFIX, ONSET_PREFIX = "audit/", "audit/eval/", "audit/onset/"
PENALIZED, REWARD_BEFORE_PENALTY = "audit/penalized", "audit/reward_before_penalty"
STOP_EXIT_CODE = 3  # `lmgym train`'s exit status when the audit stopped the run


class AuditConfig(ConfigModel):
    """`[audit]` of training: the reward-hacking audit, live (see `lmgym.train.live_audit`)."""

    every: int = Field(1, ge=0, description="Run the audit's checks every this many steps; 0 = never.")
    actions: dict[str, Action] = Field(
        default_factory=dict,
        description='What a check\'s finding does: check name -> "warn" (the default), "stop" or "penalize" (rollout checks only).',
    )
    penalty: float = Field(0.0, description="The reward a rollout flagged by a penalize check gets, before advantages.")
    min_fraction: float = Field(
        0.1, ge=0.0, le=1.0,
        description="A finding is reported, and acts (stop), when its check flags at least this fraction of the rollouts.",
    )
    window: int = Field(20, ge=2, description="Steps the trend checks fit their lines over.")
    reward_threshold: float | None = Field(
        None, description="A reward this high counts as high; unset = the environment's pass_threshold (when it applies to the reward), else 1.0."
    )
    check_metrics: list[str] = Field(
        default_factory=list,
        description="Rubric metrics that judge answers independently of the reward (a verifier logged with weight 0); default: judge*.",
    )
    skip: list[str] = Field(default_factory=list, description="Checks not to run (besides those the environment declares in audit_skip).")
    private_state: list[str] = Field(default_factory=list, description="Rollout state fields the model must not see (besides the environment's audit_private_state).")
    private_tools: list[str] = Field(default_factory=list, description="Tools whose results must not hold the answer (besides the environment's audit_private_tools).")

    @model_validator(mode="after")
    def _known_checks(self) -> AuditConfig:
        for key, names in (("actions", list(self.actions)), ("skip", self.skip)):
            unknown = sorted(set(names) - set(LIVE_CHECKS))
            if unknown:
                raise ValueError(f"audit.{key}: unknown check(s) {', '.join(unknown)}; the checks are: {', '.join(LIVE_CHECKS)}")
        trends = sorted(c for c, a in self.actions.items() if a == "penalize" and c in ROW_CHECK_NAMES)
        if trends:
            raise ValueError(
                f"audit.actions: {', '.join(trends)} is a trend over steps, with no rollouts to penalize; "
                f"use \"warn\" or \"stop\" (penalize applies to: {', '.join(RECORD_CHECK_NAMES)})"
            )
        return self


class AuditStopped(TrainingError):
    """The live audit stopped the run: a check whose action is `stop` found something."""

    def __init__(self, message: str, *, step: int, check: str, checkpoint: Path | None):
        super().__init__(message)
        self.step, self.check, self.checkpoint = step, check, checkpoint


# -- what one review found ------------------------------------------------------------------
def flagged_fraction(findings: Sequence[Finding]) -> float:
    """A trend check's number: 1.0 when it found its trend, else 0.0."""
    return 1.0 if findings else 0.0


@dataclass
class Review:
    """The record checks' findings over some rollouts, by check."""

    records: list[dict[str, Any]]
    findings: dict[str, list[Finding]] = field(default_factory=dict)

    def fraction(self, check: str) -> float:
        """The share of the scored rollouts the check flagged (so every check's number,
        and `min_fraction`, mean the same thing: a share of the step's rollouts)."""
        live = len(scored(self.records))
        return len(self.flagged(check)) / live if live else 0.0

    def flagged(self, check: str) -> list[int]:
        """Indices of the records the check flagged: its rollout references, or every
        rollout of an example it names (identical_group_completions names examples)."""
        by_ref: dict[str, list[int]] = defaultdict(list)
        by_example: dict[str, list[int]] = defaultdict(list)
        for i, record in enumerate(self.records):
            by_ref[rollout_ref(record)].append(i)
            by_example[str(record.get("example_id"))].append(i)
        indices: set[int] = set()
        for finding in self.findings.get(check, []):
            for ref in finding.examples:
                indices.update(by_ref.get(ref) or by_example.get(ref) or [])
        return sorted(indices)

    def example(self, check: str) -> str:
        """`REF 'final message'` of the first rollout the check flagged ('' when none)."""
        flagged = self.flagged(check)
        if not flagged:
            return ""
        record = self.records[flagged[0]]
        return f"{rollout_ref(record)} {_quote(final_text(record))}"


@dataclass
class BatchAudit:
    """A training batch's review, and the metrics it adds to the step's."""

    review: Review
    metrics: dict[str, float]


@dataclass
class Onset:
    """A finding reported for the first time, or a stop."""

    check: str
    scope: str  # "step" (the step's rollouts), "trend" (metrics rows) or "eval" (held-out)
    fraction: float
    example: str
    explanation: str


# -- the live audit -------------------------------------------------------------------------
class LiveAudit:
    """The audit of one training run: its checks, their options, what was reported."""

    def __init__(
        self,
        config: AuditConfig,
        *,
        reward_threshold: float = 1.0,
        declared_skip: Mapping[str, str] | None = None,
        private_state: Sequence[str] = (),
        private_tools: Sequence[str] = (),
        rows: Sequence[dict[str, Any]] = (),
        announce: Callable[[str], None] | None = None,
        distributed: bool = False,
    ):
        self.config = config
        self.skipped = {c: why for c, why in (declared_skip or {}).items() if c in LIVE_CHECKS}
        self.skipped.update({c: "audit.skip" for c in config.skip})
        self.record_checks = [c for c in RECORD_CHECK_NAMES if c not in self.skipped]
        self.row_checks = [f for f in METRICS_CHECKS + TRAINING_ROW_CHECKS if f.__name__ not in self.skipped]
        self.reward_threshold = reward_threshold
        self.private_state, self.private_tools = tuple(private_state), tuple(private_tools)
        self.rows = [dict(r) for r in rows if is_finite_number(r.get("step"))]
        self.announced = {k.removeprefix(ONSET_PREFIX) for r in self.rows for k in r if k.startswith(ONSET_PREFIX)}
        self.announce = announce or (lambda line: logger.warning("%s", line))
        self.distributed = distributed
        self._checked_metric_names = False

    @classmethod
    def for_run(cls, config: Any, env: Any, run_dir: Path | None, *, announce: Callable[[str], None] | None = None,
                distributed: bool = False) -> LiveAudit | None:
        """The audit `config.audit` asks for (None when `every` = 0), with the environment's
        declared skips, private fields and pass threshold, and the run's logged rows (a
        resumed run keeps its trends and what it already reported)."""
        settings: AuditConfig = config.audit
        if not settings.every:
            return None
        threshold = settings.reward_threshold
        if threshold is None:
            threshold = float(env.pass_threshold) if getattr(env, "pass_metric", "reward") == "reward" else 1.0
        rows = read_jsonl(run_dir / METRICS_FILE) if run_dir is not None else []
        audit = cls(
            settings, reward_threshold=threshold, declared_skip=getattr(env, "audit_skip", None) or {},
            private_state=[*getattr(env, "audit_private_state", ()), *settings.private_state],
            private_tools=[*getattr(env, "audit_private_tools", ()), *settings.private_tools],
            rows=rows, announce=announce, distributed=distributed,
        )
        for check, why in audit.skipped.items():
            audit.announce(f"audit: skipped {check} ({why})")
        return audit

    def action(self, check: str) -> Action:
        return self.config.actions.get(check, "warn")

    def due(self, step: int) -> bool:
        return self.config.every > 0 and step % self.config.every == 0

    @property
    def penalizes(self) -> bool:
        return any(a == "penalize" for c, a in self.config.actions.items() if c in self.record_checks)

    # -- rollouts ---------------------------------------------------------------------------
    def review(self, records: Sequence[dict[str, Any]]) -> Review:
        """Every record check that runs, over the records, keeping every flagged reference."""
        records = list(records)
        self._require_check_metrics(records)
        options = {
            "reward_threshold": self.reward_threshold, "check_metrics": tuple(self.config.check_metrics),
            "private_state": self.private_state, "private_tools": self.private_tools,
        }
        present = {m for r in records for m in (r.get("metrics") or {})}
        check_metrics = [m for m in self.config.check_metrics if m in present]  # a batch of errors has none
        skip = [c for c in CHECKS if c not in self.record_checks]
        if self.config.check_metrics and not check_metrics:
            skip.append("check_metric_disagrees")  # not judge* in their place
        with every_reference():
            findings = audit(records, (), reward_threshold=self.reward_threshold, check_metrics=check_metrics, skip=skip)
            for check in TRAINING_RECORD_CHECKS:
                if check.__name__ in self.record_checks and records:
                    findings.extend(check(records, **_wanted(check, options)))
        by_check: dict[str, list[Finding]] = defaultdict(list)
        for finding in findings:
            by_check[finding.check].append(finding)
        return Review(records, dict(by_check))

    def _require_check_metrics(self, records: Sequence[dict[str, Any]]) -> None:
        live = scored(records)
        if self._checked_metric_names or not live:
            return
        present = {m for r in live for m in (r.get("metrics") or {})}
        missing = [m for m in self.config.check_metrics if m not in present]
        if missing:
            raise UsageError(f"audit.check_metrics: no rollout has the metric(s) {', '.join(missing)}; the rubric's metrics: {', '.join(sorted(present)) or 'none'}")
        self._checked_metric_names = True

    def audit_batch(self, groups: Sequence[Sequence[Rollout]]) -> BatchAudit:
        """Review a training batch's scored groups and, for the checks set to penalize, give
        each flagged rollout `audit.penalty` as its reward: call it before advantages."""
        rollouts = [r for group in groups for r in group]
        review = self.review([r.to_dict() for r in rollouts])
        metrics = {PREFIX + c: review.fraction(c) for c in self.record_checks}
        lengths = [len(completion_text(r["completion"] or [])) for r in scored(review.records)]
        metrics[LENGTH_METRIC] = statistics.fmean(lengths) if lengths else 0.0
        if self.penalizes:
            flagged = {i for c in self.record_checks if self.action(c) == "penalize" for i in review.flagged(c)}
            rewards = [r.reward for r in rollouts if r.error is None and r.reward is not None]
            metrics[REWARD_BEFORE_PENALTY] = statistics.fmean(rewards) if rewards else 0.0
            for i in flagged:
                rollouts[i].reward = self.config.penalty
            metrics[PENALIZED] = float(len(flagged))
        return BatchAudit(review, metrics)

    # -- after a step, after an evaluation ----------------------------------------------------
    def after_step(self, step: int, metrics: dict[str, float], review: Review | None) -> Onset | None:
        """The loop's call after each step: keep the step's row for the trends and, at a
        step the audit is due, add the trend checks' results to `metrics` (in place), report
        new findings and return the one that stops the run, if any. `metrics` holds the
        batch's `audit/<check>` fractions (averaged over ranks) and, at an evaluation, its
        eval metrics; `review` is this rank's batch review (for an example rollout). At
        other steps the batch's fractions are dropped from `metrics` (penalties are kept)."""
        due = self.due(step)
        if not due:
            for key in [PREFIX + c for c in self.record_checks] + [LENGTH_METRIC]:
                metrics.pop(key, None)
        self.rows.append({"step": step, **metrics})
        self.rows = [r for r in self.rows if r["step"] > step - self.config.window]
        if not due:
            return None
        options = {"window": self.config.window, "last_steps": self.config.window, "check_metrics": tuple(self.config.check_metrics)}
        found: list[Onset] = []
        for check in self.row_checks:
            if self.distributed and _uses_eval_rows(check):
                continue
            findings = check(self.rows, **_wanted(check, options))
            metrics[PREFIX + check.__name__] = flagged_fraction(findings)
            if findings:
                first = findings[0]
                found.append(Onset(check.__name__, "trend", 1.0, first.examples[0] if first.examples else "", first.explanation))
        for name in self.record_checks:
            fraction = metrics.get(PREFIX + name, 0.0)
            findings = review.findings.get(name, []) if review is not None else []
            if fraction > 0:
                example = review.example(name) if review is not None else ""
                found.append(Onset(name, "step", fraction, example, findings[0].explanation if findings else ""))
        self.rows[-1] = {"step": step, **metrics}
        return self._act(step, metrics, found, stoppable=True)

    def after_eval(self, step: int, metrics: dict[str, float], records: Sequence[dict[str, Any]]) -> Onset | None:
        """Review the held-out rollouts: `audit/eval/<check>` into `metrics`, new findings
        reported, the stopping one returned (never under torchrun: rank 0 alone evaluates)."""
        if not records:
            return None
        review = self.review(records)
        found = []
        for name in self.record_checks:
            metrics[EVAL_PREFIX + name] = review.fraction(name)
            if review.findings.get(name):
                found.append(Onset(name, "eval", review.fraction(name), review.example(name), review.findings[name][0].explanation))
        return self._act(step, metrics, found, stoppable=not self.distributed)

    def _act(self, step: int, metrics: dict[str, float], found: list[Onset], *, stoppable: bool) -> Onset | None:
        stop = None
        for onset in found:
            if onset.fraction <= 0 or onset.fraction < self.config.min_fraction:
                continue
            key = ("eval/" if onset.scope == "eval" else "") + onset.check
            action = self.action(onset.check)
            if key not in self.announced:
                self.announced.add(key)
                metrics[ONSET_PREFIX + key] = onset.fraction
                self.announce(describe(step, onset, action))
            if action == "stop" and stoppable and stop is None:
                stop = onset
        return stop


def announcer(is_main: bool, console_every: int) -> Callable[[str], None]:
    """Where findings are reported: the console (rank 0, when `logging.console_every` > 0),
    else the log; other ranks say nothing."""
    if not is_main:
        return lambda line: None
    if console_every <= 0:
        return lambda line: logger.warning("%s", line)
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    return lambda line: console.print(f"[yellow]{escape(line)}[/]", soft_wrap=True, highlight=False)


def _wanted(check: Callable[..., Any], options: Mapping[str, Any]) -> dict[str, Any]:
    wanted = inspect.signature(check).parameters
    return {k: v for k, v in options.items() if k in wanted}


def _uses_eval_rows(check: Callable[..., Any]) -> bool:
    """Whether a trend check reads held-out metrics, which only rank 0 has."""
    return "eval_metric" in inspect.signature(check).parameters


def describe(step: int, onset: Onset, action: Action) -> str:
    """One line: `audit step 12: check_metric_disagrees flagged 35% of the step's rollouts, e.g. 4/r1 '...' — why (stop)`."""
    where = {"step": "of the step's rollouts", "eval": "of the held-out rollouts", "trend": "(a trend over the last steps)"}[onset.scope]
    share = "found" if onset.scope == "trend" else f"flagged {onset.fraction:.0%}"
    example = f", e.g. {onset.example}" if onset.example else ""
    return f"audit step {step}: {onset.check} {share} {where}{example} — {onset.explanation} (action: {action})"


def stop_message(step: int, onset: Onset, checkpoint: Path | None, run_dir: Path) -> str:
    samples = run_dir / "samples.jsonl"  # lmgym.train.loop.SAMPLES_FILE
    where = {"step": "of the step's rollouts", "eval": "of the held-out rollouts", "trend": "(a trend over the last steps)"}[onset.scope]
    share = "found a trend" if onset.scope == "trend" else f"flagged {onset.fraction:.0%} {where}"
    return (
        f"the audit stopped training at step {step}: {onset.check} {share}"
        + (f" (e.g. {onset.example})" if onset.example else "")
        + f", and its action is stop. Checkpoint: {checkpoint or 'none saved (rank 0 saves)'}. "
        + (f"Read the step's sampled rollouts in {samples}. " if samples.exists() else "")
        + f"To go on, fix the reward, or resume with --audit.actions.{onset.check}=warn (or penalize): "
        f"lmgym train --resume {run_dir}"
    )
