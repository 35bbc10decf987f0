"""`lmgym export`: a run's results as a dataset (Hugging Face, parquet or JSONL), optionally pushed to the Hub."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lmgym.cli.common import exit_on_error
from lmgym.eval import export


class Format(str, Enum):
    hf = "hf"
    parquet = "parquet"
    jsonl = "jsonl"


def export_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of `lmgym eval` (holds results.jsonl).")],
    format: Annotated[Format, typer.Option("--format", "-f", help="hf: a `datasets` folder (load_from_disk); parquet: one file; jsonl: one row per line.")] = Format.hf,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where to write. Default RUN_DIR/dataset, RUN_DIR/results.parquet or RUN_DIR/dataset.jsonl.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output (a folder only if it holds a saved dataset).")] = False,
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", help="Also upload to this Hub dataset repository (user/name). Needs HF_TOKEN or `hf auth login`.")] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push-to-hub: create the repository private.")] = False,
) -> None:
    """Export RUN_DIR's rollouts as a dataset: one row per rollout.

    Columns: example_id, rollout, task, prompt and completion (chat messages as JSON
    text), answer, info, reward, metric_<name> per reward function, error_kind,
    error_message, stop_reason, num_turns, prompt_tokens, completion_tokens, latency_s.
    """
    with exit_on_error():
        token = None
        if push_to_hub is not None:  # fail before any work, and before any network call
            export.check_repo_id(push_to_hub)
            token = export.hub_token()
        from datasets import disable_progress_bars

        disable_progress_bars()  # one line of output per export, not a bar per write
        dataset, path = export.export_run(run_dir, format.value, output, overwrite=overwrite)
        console = Console(highlight=False)
        console.print(f"{dataset.num_rows} rollouts, {len(dataset.column_names)} columns -> {path}")
        if push_to_hub is not None:
            export.push_to_hub(dataset, push_to_hub, token, private=private)
            console.print(f"pushed to https://huggingface.co/datasets/{push_to_hub}")
