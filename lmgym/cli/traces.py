"""`lmgym traces`: recorded traffic (`lmgym proxy`) into an SFT dataset or an eval environment."""

from __future__ import annotations

import asyncio
import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lmgym import errors
from lmgym.cli.common import console, exit_on_error
from lmgym.cli.eval import parse_json_object
from lmgym.flywheel import traces as tr


class Target(str, Enum):
    sft = "sft"
    env = "env"


class Format(str, Enum):
    jsonl = "jsonl"
    hf = "hf"
    parquet = "parquet"


def traces_command(
    paths: Annotated[list[Path], typer.Argument(help="Trace folders of `lmgym proxy` (their traces-NNNNN.jsonl files are read in order) or trace files.")],
    to: Annotated[Target, typer.Option("--to", help="sft: {prompt, completion} chat rows for `lmgym sft`; env: prompts with the recorded replies as references, for `lmgym eval traces`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write: FILE.jsonl, FILE.parquet, or a folder (a Hugging Face dataset, datasets.load_from_disk).")],
    format: Annotated[Optional[Format], typer.Option("--format", "-f", help="Override the format chosen from -o's suffix. `lmgym sft --sft.data` reads jsonl only.")] = None,
    session: Annotated[Optional[list[str]], typer.Option("--session", help="Keep only this session id (repeatable).")] = None,
    model: Annotated[Optional[list[str]], typer.Option("--model", "-m", help="Keep only traces whose requested or answering model is this (repeatable).")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="Keep traces started at or after this ISO date or time (UTC unless it names a zone).")] = None,
    until: Annotated[Optional[str], typer.Option("--until", help="Keep traces started at or before this ISO date or time; a bare date includes that whole day.")] = None,
    finish_reason: Annotated[Optional[list[str]], typer.Option("--finish-reason", help="Keep only this finish reason, e.g. stop or tool_calls (repeatable).")] = None,
    keep_duplicates: Annotated[bool, typer.Option("--keep-duplicates", help="Keep repeated identical (prompt, completion, tools) traces; by default only the first is kept.")] = False,
    rescore_env: Annotated[Optional[str], typer.Option("--rescore-env", help="Score each trace as a one-turn rollout with this environment's rubric (its functions must not need a reference answer).")] = None,
    env_args: Annotated[Optional[str], typer.Option("--env-args", "-a", help="JSON object passed to the --rescore-env environment's load_environment.")] = None,
    min_reward: Annotated[Optional[float], typer.Option("--min-reward", help="With --rescore-env: keep only traces scored at least this.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Traces scored at once with --rescore-env (judges are network calls).")] = 16,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Turn recorded traces into a chat SFT dataset (--to sft) or an eval environment's dataset (--to env).

    Error traces (HTTP errors, broken streams), /v1/completions traces, empty replies and duplicates are dropped; a summary says how many traces each reason dropped.
    """
    with exit_on_error():
        if min_reward is not None and rescore_env is None:
            raise errors.UsageError("--min-reward needs --rescore-env: recorded traffic has no reward of its own")
        if env_args is not None and rescore_env is None:
            raise errors.UsageError("--env-args goes with --rescore-env")
        fmt = tr.output_format(output, format.value if format else None)
        flt = tr.TraceFilter(
            sessions=frozenset(session or ()), models=frozenset(model or ()),
            finish_reasons=frozenset(finish_reason or ()),
            since=tr.parse_when(since) if since else None, until=tr.parse_when(until, end=True) if until else None,
            dedupe=not keep_duplicates,
        )
        env = None
        if rescore_env is not None:  # load it first: a bad name or rubric fails before any reading
            from lmgym.registry import load_environment

            env = load_environment(rescore_env, **(parse_json_object(env_args, "--env-args") if env_args else {}))
            tr.check_rescorable(env)
        counts = tr.Counts()
        selected = tr.select_traces(tr.read_traces(tr.trace_files(paths), counts), flt, counts)
        if env is not None and selected:
            with console.status(f"re-scoring {len(selected)} traces with {rescore_env}..."):
                rollouts = asyncio.run(tr.rescore(env, selected, concurrency=concurrency))
            selected = tr.keep_rewarded(selected, rollouts, min_reward, counts)
        print_counts(counts)
        if not selected:
            console.print("[bold red]error:[/] no trace is left after the filters; nothing written")
            raise typer.Exit(1)
        rows = [tr.sft_row(s) if to is Target.sft else tr.env_row(s) for s in selected]
        tr.save_rows(rows, output, fmt, overwrite=overwrite)
        console.print(f"{len(rows)} rows ({to.value}, {fmt}) -> {output}")
        console.print(next_step(to, fmt, output), highlight=False, soft_wrap=True)


def next_step(to: Target, fmt: str, output: Path) -> str:
    if to is Target.env:
        return f"evaluate a model on them: lmgym eval traces -a '{json.dumps({'path': str(output)})}' -m MODEL -b URL -n -1 -r 1"
    if fmt == "jsonl":
        return f"fine-tune on them: lmgym sft CONFIG.toml --sft.data {output}"
    return "(lmgym sft reads JSONL only: write -o FILE.jsonl for it; this format suits TRL's SFTTrainer)"


def print_counts(counts: tr.Counts) -> None:
    table = Table(title="Traces", show_header=True, header_style="bold")
    table.add_column("traces")
    table.add_column("count", justify="right")
    table.add_row("files", str(counts.files))
    table.add_row("lines read", str(counts.read))
    for reason, label in tr.DROP_REASONS.items():
        if counts.dropped.get(reason):
            table.add_row(f"  dropped: {label}", str(counts.dropped[reason]))
    table.add_row("kept", str(counts.kept))
    Console().print(table)
