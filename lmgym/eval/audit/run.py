"""Running the audit over records and metrics rows, or over a run directory: which
checks apply (the environment's declared skips, `--skip`), and the report."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from lmgym.errors import UsageError
from lmgym.eval.audit.checks import RECORD_CHECKS
from lmgym.eval.audit.findings import METRICS_FILE, SEVERITIES, Finding, Record, scored
from lmgym.eval.audit.trends import METRICS_CHECKS
from lmgym.eval.results import METADATA_FILE, RESULTS_FILE, is_finite_number, read_jsonl

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
    return float(value) if is_finite_number(value) else 1.0


def _declared_skips(metadata: dict[str, Any]) -> dict[str, str]:
    """The checks the run's environment said do not apply to it, with its reasons."""
    declared = metadata.get("audit_skip")
    return {str(k): str(v) for k, v in declared.items() if k in CHECKS} if isinstance(declared, dict) else {}
