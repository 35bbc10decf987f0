"""`lmgym demo`: the whole loop in about two minutes on a laptop, offline and keyless.

1. evaluate the embedded SmolLM2-135M (llama.cpp) on small sums: any model behind an API;
2. evaluate an untrained tiny model on `reverse-digits`'s held-out examples, in process;
3. train it (`configs/reverse-digits.toml`: SFT warm start, then GRPO);
4. evaluate what was trained (`RUN_DIR/final`) on the same held-out examples;
then write each run's HTML report and print a before / after table.

Each step is the `lmgym` command a user would type, printed, then run in this process (one
start-up of torch and transformers, not three) with its output shown, so the demo teaches
the commands; a failed step stops the demo naming the step.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from lmgym.cli.common import INTERRUPTED, console, exit_on_error
from lmgym.errors import LmgymError, UsageError
from lmgym.eval.report import write_report
from lmgym.eval.results import read_jsonl, read_metadata

TRAIN_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "reverse-digits.toml"
GREEDY = json.dumps({"temperature": 0, "max_tokens": 8})  # as training's [eval] of reverse-digits
EMBEDDED_ARGS = json.dumps({"answer_format": "last-number", "max_value": 20, "operators": "+-"})


class StepFailed(LmgymError):
    """A demo step's command exited with an error."""


@dataclass
class Step:
    name: str  # a few words, for the reports' list
    title: str
    args: list[str]
    run_dir: Path


def plan(root: Path, *, embedded: bool, eval_examples: int, train_steps: Optional[int]) -> list[Step]:
    """The demo's commands, each writing its own run directory under `root`."""
    trained = root / "3-train"
    held_out = ["-n", str(eval_examples), "-r", "1", "-S", GREEDY]
    steps = [
        Step("embedded SmolLM2-135M on arithmetic", "evaluate SmolLM2-135M on sums, through its API",
             ["eval", "arithmetic", "-n", "10", "-r", "3", "-a", EMBEDDED_ARGS, "-o", str(root / "1-eval-embedded")],
             root / "1-eval-embedded"),
        Step("untrained tiny-llama on reverse-digits", "evaluate an untrained tiny model on reverse-digits",
             ["eval", "reverse-digits", "--model", "tiny-llama", *held_out, "-o", str(root / "2-before")], root / "2-before"),
        Step("training", "train it: SFT warm start, then GRPO",
             ["train", str(TRAIN_CONFIG), "--logging.output_dir", str(trained),
              *(["--trainer.max_steps", str(train_steps)] if train_steps is not None else []),
              "--eval.num_examples", str(eval_examples)], trained),
        Step("trained policy on reverse-digits", "evaluate the trained model on the same examples",
             ["eval", "reverse-digits", "--model", str(trained / "final"), *held_out, "-o", str(root / "4-after")], root / "4-after"),
    ]
    return steps if embedded else steps[1:]


def run_step(number: int, total: int, step: Step) -> None:
    """Run one step's command with its output shown; StepFailed names the step."""
    command = ["lmgym", *step.args]
    console.rule(f"[bold]step {number}/{total}[/]: {step.title}")
    console.print(f"[dim]$ {shlex.join(command)}[/]", highlight=False)
    started = time.perf_counter()
    code = run_lmgym(step.args)
    if code == INTERRUPTED:  # Ctrl-C: the command has said what it kept; not a failure of the step
        console.print(f"[yellow]demo interrupted[/] at step {number}/{total}; its run directory: {step.run_dir}")
        raise typer.Exit(INTERRUPTED)
    if code != 0:
        raise StepFailed(f"step {number}/{total} ({step.title}) failed with exit code {code}; its command was:\n  {shlex.join(command)}")
    console.print(f"[dim]step {number} took {time.perf_counter() - started:.0f}s[/]")


def run_lmgym(args: list[str]) -> int:
    """`lmgym ARGS` in this process, as typed: its exit status."""
    from lmgym.cli import app  # the package imports this module

    try:
        app(args, prog_name="lmgym")
    except SystemExit as exited:
        return exited.code if isinstance(exited.code, int) else int(exited.code is not None)
    return 0


def eval_row(label: str, run_dir: Path, metric: str) -> list[str]:
    summary = read_metadata(run_dir)["summary"]
    return [label, f"{summary['reward_mean']:.3f}", f"{summary['metrics'].get(metric, float('nan')):.3f}", str(run_dir)]


def training_evals(run_dir: Path) -> list[dict[str, Any]]:
    """The training run's held-out evaluations: step 0 is right after the warm start."""
    return [row for row in read_jsonl(run_dir / "metrics.jsonl") if "eval/reward" in row]


def results_table(steps: list[Step], metric: str = "exact_match") -> Table:
    """Before / after on the held-out examples, and where each run and its report are."""
    by_name = {step.run_dir.name: step.run_dir for step in steps}
    table = Table(title="reverse-digits, held-out examples, greedy", title_justify="left")
    for column in ("model", "reward", metric, "run directory"):
        table.add_column(column, justify="right" if column in ("reward", metric) else "left")
    table.add_row(*eval_row("untrained tiny-llama", by_name["2-before"], metric))
    evals = training_evals(by_name["3-train"])
    if evals and evals[0]["step"] == 0:
        first = evals[0]
        table.add_row("after SFT (training's eval)", f"{first['eval/reward']:.3f}",
                      f"{first.get('eval/' + metric, float('nan')):.3f}", str(by_name["3-train"]))
    table.add_row(*eval_row("after GRPO (final/)", by_name["4-after"], metric))
    return table


def demo_command(
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Where the runs go. Default runs/demo/TIME.")] = None,
    embedded: Annotated[bool, typer.Option("--embedded/--no-embedded", help="Run step 1, the embedded llama.cpp model (needs the `local` extra).")] = True,
    eval_examples: Annotated[int, typer.Option("--eval-examples", min=1, help="Held-out examples evaluated before and after training.")] = 200,
    train_steps: Annotated[Optional[int], typer.Option("--train-steps", min=1, help="GRPO steps. Default: configs/reverse-digits.toml's (60).")] = None,
) -> None:
    """Evaluate, train and evaluate again: the whole loop on the embedded default, offline.

    Runs, as separate `lmgym` commands with their output: an evaluation of the embedded
    SmolLM2-135M; an evaluation of an untrained tiny model on reverse-digits; its training
    (SFT warm start, then GRPO); the evaluation of the trained model on the same held-out
    examples. Ends with each run's HTML report and a before / after table.
    """
    with exit_on_error():
        if not TRAIN_CONFIG.is_file():
            raise UsageError(f"the demo trains with {TRAIN_CONFIG}, which is missing: run it from a checkout of lmgym")
        root = output_dir or Path("runs") / "demo" / f"{datetime.now():%Y%m%d-%H%M%S}"
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"{root} already holds files; choose an output directory that does not exist yet")
        steps = plan(root, embedded=embedded, eval_examples=eval_examples, train_steps=train_steps)
        started = time.perf_counter()
        for number, step in enumerate(steps, 1):
            run_step(number, len(steps), step)
        console.rule("[bold]reports[/]")
        for step in steps:
            console.print(f"{step.name}: {write_report(step.run_dir)}", highlight=False)
        console.print(results_table(steps))
        console.print(f"[dim]the demo took {time.perf_counter() - started:.0f}s; open a report in a browser, or `lmgym view RUN_DIR` any run[/]")
