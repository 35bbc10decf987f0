"""`lmgym audit RUN_DIR`: look for signs that the reward is being gamed (see `lmgym.eval.audit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lmgym.cli.common import console, exit_on_error
from lmgym.eval.audit import AUDIT_FILE, CHECKS, AuditReport, Finding, audit_run

SEVERITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "dim"}
SHOWN_EXAMPLES = 3


def audit_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding results.jsonl (eval) and/or metrics.jsonl (train).")],
    json_out: Annotated[bool, typer.Option("--json", help=f"Also write the findings to RUN_DIR/{AUDIT_FILE}.")] = False,
    fail_on_findings: Annotated[bool, typer.Option("--fail-on-findings", help="Exit with status 1 when anything is found (for CI).")] = False,
    check_metric: Annotated[Optional[list[str]], typer.Option("--check-metric", help="A metric that checks answers independently of the reward (a judge logged with weight 0, ...). Repeatable. Default: metrics named judge*.")] = None,
    reward_threshold: Annotated[Optional[float], typer.Option("--reward-threshold", help="A reward this high counts as 'high'. Default: the run's --pass-threshold, else 1.0.")] = None,
    eval_metric: Annotated[str, typer.Option("--eval-metric", help="Held-out metric of metrics.jsonl compared with the training reward.")] = "eval/reward",
    skip: Annotated[Optional[list[str]], typer.Option("--skip", help=f"A check not to run. Repeatable. Checks: {', '.join(CHECKS)}.")] = None,
) -> None:
    """Flag rollouts and trends that suggest the reward is being gamed.

    Each check looks for one pattern (answer missing from a rewarded reply, echoed prompt,
    format paid without correctness, length outliers, loops, collapsed groups, a constant
    answer, training reward up while held-out reward goes down) and prints what it found,
    how often, and which rollouts to read.
    """
    with exit_on_error():
        report = audit_run(
            run_dir, reward_threshold=reward_threshold, check_metrics=check_metric or (),
            eval_metric=eval_metric, skip=skip or (),
        )
    print_report(report)
    if json_out:
        path = run_dir / AUDIT_FILE
        path.write_bytes(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2))
        console.print(f"audit: {path}")
    raise typer.Exit(1 if fail_on_findings and report.findings else 0)


def print_audit(run_dir: Path) -> list[Finding]:
    """Audit RUN_DIR with the default thresholds and print the table (`lmgym eval --audit`)."""
    with exit_on_error():
        report = audit_run(run_dir)
    print_report(report)
    return report.findings


def print_report(report: AuditReport) -> None:
    out = Console()
    scope = _scope(report)
    for check, why in report.skipped.items():
        out.print(f"[dim]audit: skipped {check} ({escape(why)})[/]", highlight=False)
    if not report.findings:
        out.print(f"[bold green]audit: no findings[/] ({scope})", highlight=False)
        return
    table = Table(title=f"Reward-hacking audit: {len(report.findings)} finding(s) ({scope})", header_style="bold")
    table.add_column("check")
    table.add_column("severity")
    table.add_column("count", justify="right")
    table.add_column("fraction", justify="right")
    table.add_column("examples")
    table.add_column("explanation")
    for finding in report.findings:
        table.add_row(
            finding.check,
            f"[{SEVERITY_STYLE[finding.severity]}]{finding.severity}[/]",
            str(finding.count) if finding.total is None else f"{finding.count}/{finding.total}",
            "–" if finding.fraction is None else f"{finding.fraction:.0%}",
            _examples(finding),
            finding.explanation,
        )
    out.print(table)


def _scope(report: AuditReport) -> str:
    parts = [f"{len(report.checks)} check{'s' * (len(report.checks) != 1)}"]
    if report.rollouts:
        parts.append(f"{report.scored} scored rollouts, high reward ≥ {report.reward_threshold:g}")
    if report.metrics_rows:
        parts.append(f"{report.metrics_rows} metrics.jsonl rows")
    return ", ".join(parts)


def _examples(finding: Finding) -> str:
    shown = ", ".join(finding.examples[:SHOWN_EXAMPLES])
    more = finding.count - min(len(finding.examples), SHOWN_EXAMPLES)
    return f"{shown} (+{more})" if more > 0 and finding.total is not None else shown
