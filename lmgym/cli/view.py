"""`lmgym view`: write a run's self-contained HTML report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from lmgym.cli.common import console, exit_on_error
from lmgym.eval.report import MAX_CHARS, REPORT_FILE, write_report


def view_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory: from `lmgym eval` (results.jsonl) or `lmgym train` (metrics.jsonl).", show_default=False)],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help=f"Where to write the HTML file. Default RUN_DIR/{REPORT_FILE}.")] = None,
    max_chars: Annotated[int, typer.Option("--max-chars", min=100, help="Cut any message or field longer than this many characters (with a note), to keep the file small.")] = MAX_CHARS,
) -> None:
    """Write one self-contained HTML report of RUN_DIR and print its path.

    The file opens offline in any browser (no network, no CDN). Eval runs: the summary, a
    reward histogram and one per metric, a sortable, paginated table of rollouts with
    filters (errored, truncated, zero reward) and a text search, and every transcript
    (roles, tool calls and results, <think> reasoning folded). Training runs: reward,
    loss, KL and tokens/s curves over steps. The run directory itself is only read.
    """
    with exit_on_error():
        started = time.perf_counter()
        path = write_report(run_dir, output, max_chars=max_chars)
        size_mb = path.stat().st_size / 1e6
        console.print(f"[dim]report built in {time.perf_counter() - started:.1f}s, {size_mb:.1f} MB[/]")
    print(path)
