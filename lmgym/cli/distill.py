"""`lmgym distill`: teacher rollouts, rejection sampling, SFT data, and optionally a student
fine-tuned and evaluated before and after, in one command (see lmgym.flywheel.distill)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import orjson
import typer
from rich.console import Console
from rich.table import Table

from lmgym import errors
from lmgym.cli.common import INTERRUPTED, console, exit_on_error, print_error
from lmgym.cli.eval import parse_json_object, progress_bar, run_with_progress
from lmgym.clients.openai import OpenAIClient
from lmgym.config import validate
from lmgym.eval.config import EvalConfig, differing_settings
from lmgym.eval.results import METADATA_FILE, RESULTS_FILE, read_metadata, read_results
from lmgym.eval.run import EvalRun
from lmgym.eval.summary import Summary
from lmgym.flywheel import distill as ds
from lmgym.flywheel.traces import save_rows
from lmgym.registry import load_environment
from lmgym.rundir import RunLock, claim_run_dir


def distill_command(
    ctx: typer.Context,
    teacher: Annotated[str, typer.Option("--teacher", help="The teacher model's name, as its server knows it.")],
    env: Annotated[str, typer.Option("--env", "-e", help="Environment name (see `lmgym list`); the teacher runs on its training split.")],
    min_reward: Annotated[float, typer.Option("--min-reward", help="Keep rollouts whose reward is at least this.")],
    base_url: Annotated[Optional[str], typer.Option("--base-url", "-b", help="The teacher's OpenAI-compatible API base URL (default: OpenAI's).")] = None,
    api_key_var: Annotated[str, typer.Option("--api-key-var", help="Environment variable holding the teacher's API key.")] = "OPENAI_API_KEY",
    tries: Annotated[int, typer.Option("--tries", "-k", help="Teacher rollouts per example (rejection sampling).")] = 4,
    num_examples: Annotated[int, typer.Option("--num-examples", "-n", help="Training examples to run the teacher on; -1 for all.")] = 100,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Shuffle the training examples with this seed before taking -n of them.")] = None,
    max_per_example: Annotated[int, typer.Option("--max-per-example", help="Most distinct passing rollouts kept per example, best first.")] = 4,
    env_args: Annotated[Optional[str], typer.Option("--env-args", "-a", help="JSON object passed to load_environment.")] = None,
    sampling_args: Annotated[Optional[str], typer.Option("--sampling-args", "-S", help="JSON object merged into each teacher request, e.g. '{\"temperature\": 0.8}'.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="Most teacher requests in flight at once.")] = 32,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds one teacher request may take as a whole, from connecting to its last byte, per try.")] = 120.0,
    max_retries: Annotated[int, typer.Option("--max-retries", help="Retries of a teacher request on 429/5xx/timeouts.")] = 5,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Where everything goes (teacher/, sft.jsonl, sft_dataset/, student/, distill.json). Default runs/distill/ENV--TEACHER--TIME. Running again with the same -o continues the teacher run.")] = None,
    student: Annotated[Optional[Path], typer.Option("--student", help="A training config (TOML): fine-tune its model on the kept rollouts and evaluate it before and after. Extra dotted options override it, e.g. --sft.max_steps 50.")] = None,
    eval_n: Annotated[Optional[int], typer.Option("--eval-n", help="Eval-split examples for the student's before/after evaluation. Default: the config's eval.num_examples.")] = None,
) -> None:
    """Distil a teacher into SFT data by rejection sampling, and optionally into a student.

    The teacher runs -k rollouts of each of -n training examples; per example the distinct rollouts with reward >= --min-reward (at most --max-per-example) become {prompt, completion} rows in OUT/sft.jsonl (for `lmgym sft --sft.data`) and OUT/sft_dataset (datasets.load_from_disk).

    With --student CONFIG the student is evaluated on the eval split, fine-tuned on those rows, and evaluated again.
    """
    with exit_on_error(), contextlib.ExitStack() as stack:
        if ctx.args and student is None:
            raise errors.UsageError(f"unexpected arguments {ctx.args}: dotted config overrides go with --student")
        if tries < 1:
            raise errors.UsageError(f"--tries must be at least 1, got {tries}")
        given_env_args = parse_json_object(env_args, "--env-args") if env_args is not None else {}
        given_sampling = parse_json_object(sampling_args, "--sampling-args") if sampling_args is not None else {}
        config = _student_config(student, list(ctx.args)) if student is not None else None
        environment = load_environment(env, **given_env_args)
        examples = ds.train_examples(environment, num_examples, seed)
        if config is not None and environment.eval_dataset is None:
            raise errors.UsageError(f"{env} has no eval split to evaluate the student on without the training examples")
        out = output_dir or claim_run_dir("distill", env, teacher)
        stack.enter_context(RunLock(out))
        settings = validate(EvalConfig, {
            "env": env, "model": teacher, "base_url": base_url, "api_key_var": api_key_var,
            "num_examples": num_examples, "rollouts_per_example": tries, "concurrency": concurrency,
            "env_args": given_env_args, "sampling_args": given_sampling, "seed": seed, "timeout": timeout,
            "max_retries": max_retries, "pass_metric": "reward", "pass_threshold": min_reward, "split": "train",
        })
        summary = run_teacher(EvalRun(environment, settings, out / ds.TEACHER_DIR, examples))
        records = _current_records(out / ds.TEACHER_DIR, examples, tries)
        selection = ds.select_rollouts(records, min_reward, max_per_example=max_per_example, teacher=teacher)
        print_selection(selection, min_reward, max_per_example)
        report: dict[str, Any] = {"config": settings.model_dump(), "selection": selection.to_dict(), "teacher_summary": summary.to_dict()}
        if not selection.rows:
            _write_report(out, report)
            print_error(f"no teacher rollout reached reward {min_reward:g}; nothing to train on")
            raise typer.Exit(1)
        data = save_rows(selection.rows, out / ds.SFT_FILE, "jsonl", overwrite=True)
        save_rows(selection.rows, out / ds.SFT_DATASET, "hf", overwrite=True)
        console.print(f"SFT data: {data} ({len(selection.rows)} rows) and {out / ds.SFT_DATASET}")
        if config is not None:
            report["student"] = run_student(config, env, given_env_args, environment, eval_n, out, data)
        _write_report(out, report)


def _student_config(path: Path, overrides: list[str]):
    from lmgym.train.config import load_config

    return load_config(path, overrides)


def run_teacher(run: EvalRun) -> Summary:
    """The teacher's rollouts into RUN_DIR/results.jsonl, continuing what is there."""
    settings, run_dir = run.config, run.run_dir
    api_key = os.environ.get(settings.api_key_var)
    if api_key is None and settings.base_url is None:
        raise errors.UsageError(f"no API key: set the environment variable {settings.api_key_var} (or pick another with --api-key-var)")
    _refuse_another_teacher_run(run_dir, settings.model_dump())
    client = OpenAIClient(settings.base_url, api_key, timeout=settings.timeout, max_retries=settings.max_retries)
    try:
        with progress_bar() as progress:
            task = progress.add_task(f"teacher {settings.model} on {settings.env}", total=None, reward="")
            asyncio.run(run_with_progress(run, client, settings.concurrency, progress, task))
    except (KeyboardInterrupt, errors.ModelError) as exc:
        if isinstance(exc, errors.ModelError):
            print_error(exc)
        console.print(f"{run.summary.rollouts} teacher rollouts are saved in {run_dir / RESULTS_FILE}; run the same command with -o {run_dir.parent} to continue")
        raise typer.Exit(INTERRUPTED if isinstance(exc, KeyboardInterrupt) else 1) from None
    return run.summary


# What makes teacher rollouts of a continued run the same kind of data (-n and -k may grow).
TEACHER_IDENTITY = ("env", "model", "env_args", "sampling_args", "split")


def _refuse_another_teacher_run(run_dir: Path, settings: dict[str, Any]) -> None:
    """Continuing with -o must not count another teacher's or environment's rollouts as this run's."""
    if not (run_dir / METADATA_FILE).exists():
        return
    differ = differing_settings(read_metadata(run_dir)["config"], settings, TEACHER_IDENTITY)
    if differ:
        raise errors.UsageError(
            f"{run_dir} holds another teacher run ({', '.join(differ)}); choose an output directory that does not exist yet"
        )


def _current_records(run_dir: Path, examples: list, tries: int) -> list[dict[str, Any]]:
    """This run's records: a continued run directory may hold other examples or more tries."""
    wanted = {e.id for e in examples}
    return [r for r in read_results(run_dir / RESULTS_FILE) if r["example_id"] in wanted and r["rollout"] < tries]


def run_student(config, env: str, env_args: dict[str, Any], environment: Any, eval_n: Optional[int], out: Path, data: Path) -> dict[str, Any]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if config.env.name != env or config.env.args != env_args:
        console.print(f"[dim]student config: environment set to {env} (it named {config.env.name})[/]")
    config.env.name, config.env.args = env, env_args
    config.sft.data = str(data)
    config.logging.output_dir = str(out / ds.STUDENT_DIR)
    examples = environment.get_eval_examples(eval_n or config.eval.num_examples)
    console.print(f"student {config.model.name}: evaluating on {len(examples)} eval examples, fine-tuning, evaluating again")
    result = ds.distill_student(config, environment, examples, out / ds.STUDENT_DIR)
    print_before_after(result.before, result.after, len(examples))
    console.print(f"student model: {result.model_dir}")
    return {"model_dir": str(result.model_dir), "eval_examples": len(examples), "before": result.before,
            "after": result.after, "sft": result.sft}


def _write_report(out: Path, report: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / ds.SUMMARY_FILE).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2, default=str))


def print_selection(selection: ds.Selection, min_reward: float, max_per_example: int) -> None:
    rate = selection.acceptance_rate
    table = Table(title="Rejection sampling", show_header=True, header_style="bold")
    table.add_column("teacher rollouts")
    table.add_column("count", justify="right")
    table.add_row("examples", str(selection.examples))
    table.add_row("rollouts (errors)", f"{selection.rollouts} ({selection.errors})")
    table.add_row(f"passing (reward ≥ {min_reward:g})", str(selection.passing))
    table.add_row("acceptance rate", "–" if rate is None else f"{rate:.1%}")
    table.add_row("examples with a passing rollout", f"{selection.examples_passing} / {selection.examples}")
    table.add_row(f"kept (distinct, ≤ {max_per_example} per example)", str(len(selection.rows)))
    Console().print(table)


def print_before_after(before: dict[str, float], after: dict[str, float], n: int) -> None:
    table = Table(title=f"Student on {n} eval examples", show_header=True, header_style="bold")
    for name, justify in (("measure", "left"), ("before", "right"), ("after", "right"), ("change", "right")):
        table.add_column(name, justify=justify)
    names = [n for n in dict.fromkeys([*before, *after]) if n != "errors"]
    for name in [*sorted(names, key=lambda n: n != "reward"), "errors"]:
        b, a = before.get(name), after.get(name)
        change = "–" if a is None or b is None else f"{a - b:+.3f}"
        table.add_row(name, "–" if b is None else f"{b:.3f}", "–" if a is None else f"{a:.3f}", change)
    Console().print(table)
