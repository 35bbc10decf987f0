"""`lmgym eval`: evaluate an environment against any OpenAI-compatible model, the embedded
one, or a model run in this process (a trained policy folder, a hub id, tiny-llama/smollm2)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from lmgym import errors
from lmgym.cli.audit import print_audit
from lmgym.cli.common import INTERRUPTED, console, exit_on_error, print_error
from lmgym.clients.loop import run as run_loop
from lmgym.clients.openai import OpenAIClient
from lmgym.embedded import DEFAULT_MODEL, EmbeddedServer
from lmgym.eval.config import EvalConfig, resolve_config
from lmgym.eval.export import export_run
from lmgym.eval.results import RESULTS_FILE, read_metadata
from lmgym.eval.run import EvalRun
from lmgym.eval.runner import EvalPlan
from lmgym.eval.summary import Summary
from lmgym.registry import load_environment
from lmgym.rundir import RunLock, claim_run_dir, discard_if_unused, require_fresh_dir
from lmgym.train.model_names import runs_in_process


def parse_json_object(text: str, flag: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line, naming the flag and position on error."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.UsageError(
            f"invalid JSON in {flag} at line {exc.lineno}, column {exc.colno} (character {exc.pos}): "
            f"{exc.msg}\n  {text}\n  {' ' * exc.pos}^"
        ) from None
    if not isinstance(value, dict):
        raise errors.UsageError(f"{flag} must be a JSON object like '{{\"key\": 1}}', got {text!r}")
    return value


def env_and_overrides(env: Optional[str], extra: list[str]) -> tuple[Optional[str], list[str]]:
    """ENV and the dotted overrides. When an override comes first (`--a.b 1 arithmetic`),
    click hands it over as ENV and the rest as extra words; ENV is then the bare word found
    where an override's key is expected."""
    if env is None or not env.startswith("-"):
        return env, extra
    args = [env, *extra]
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") and "=" not in arg:
            return arg, args[:i] + args[i + 1:]
        i += 2 if arg.startswith("--") and "=" not in arg else 1
    return None, args


def eval_command(
    ctx: typer.Context,
    env: Annotated[Optional[str], typer.Argument(help="Environment name (see `lmgym list`). Optional with --config or --resume.")] = None,
    config_file: Annotated[Optional[Path], typer.Option("--config", help="TOML file of the settings below, each named as its long flag with _ for - (env = \"arithmetic\", num_examples = 20, ...), env_args and sampling_args as \\[env_args] and \\[sampling_args] tables; not --output-dir, --resume, --save-dataset or --audit. See configs/eval-arithmetic.toml. Flags given here win over the file.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help=f"Model name sent to the server. Default {DEFAULT_MODEL!r}: the embedded SmolLM2-135M, started locally when no --base-url is given. Without --base-url, a folder (a training run's RUN_DIR/final, a LoRA adapter), a hub id (org/name, from the local Hugging Face cache) or tiny-llama/smollm2 runs in this process, as training samples it.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", "-b", help="OpenAI-compatible API base URL, e.g. http://localhost:8000/v1 (vLLM) or https://api.openai.com/v1.")] = None,
    api_key_var: Annotated[Optional[str], typer.Option("--api-key-var", "-k", help="Environment variable holding the API key (default OPENAI_API_KEY). The key is never logged or saved.")] = None,
    num_examples: Annotated[Optional[int], typer.Option("--num-examples", "-n", help="Number of examples (of each environment, for a group like a,b); -1 for all. Default 5.")] = None,
    rollouts_per_example: Annotated[Optional[int], typer.Option("--rollouts-per-example", "-r", help="Rollouts per example (for pass@k). Default 3.")] = None,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", "-c", help="Most requests in flight at once. Default 32.")] = None,
    env_args: Annotated[Optional[str], typer.Option("--env-args", "-a", help='JSON object passed to load_environment, e.g. \'{"max_value": 1000}\'.')] = None,
    sampling_args: Annotated[Optional[str], typer.Option("--sampling-args", "-S", help='JSON object merged into each request, e.g. \'{"temperature": 0.2, "max_tokens": 512}\'.')] = None,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", "-o", help="Run directory for results.jsonl and metadata.json. Default runs/eval/ENV--MODEL--TIME.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this directory: rollouts already saved are skipped.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Shuffle the examples with this seed before taking -n of them.")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Seconds one request may take as a whole, from connecting to its last byte, per try (a timed-out try is retried). Default 120.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help='Where a model run in this process runs: "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1". Default auto.')] = None,
    max_retries: Annotated[Optional[int], typer.Option("--max-retries", help="Retries of a request on 429/5xx/timeouts before the rollout is recorded as failed. Default 5.")] = None,
    pass_metric: Annotated[Optional[str], typer.Option("--pass-metric", help="A rollout passes (for pass@k) when this metric, or `reward`, is at least --pass-threshold. Default: what the environment declares, else the reward.")] = None,
    pass_threshold: Annotated[Optional[float], typer.Option("--pass-threshold", help="A rollout passes (for pass@k) when its reward (or --pass-metric) is at least this. Default: what the environment declares, else 1.0.")] = None,
    price_input: Annotated[Optional[float], typer.Option("--price-input", help="USD per million prompt tokens, to report cost.")] = None,
    price_output: Annotated[Optional[float], typer.Option("--price-output", help="USD per million completion tokens, to report cost.")] = None,
    save_dataset: Annotated[Optional[Path], typer.Option("--save-dataset", help="After a completed run, also save its rollouts as a Hugging Face dataset in this folder (datasets.load_from_disk; see `lmgym export`). A dataset already there is replaced.")] = None,
    audit: Annotated[bool, typer.Option("--audit", help="After the summary, audit the results for signs of reward hacking (see `lmgym audit`).")] = False,
) -> None:
    """Evaluate ENV against a model behind an OpenAI-compatible API.

    Settings come from flags, or from a TOML file given with --config; extra options are
    dotted overrides of its keys: --env_args.max_value 50 --sampling_args.temperature 0.2

    Results stream to RUN_DIR/results.jsonl (one line per rollout, flushed at once);
    RUN_DIR/metadata.json holds the config and the summary.
    """
    with exit_on_error():
        env, overrides = env_and_overrides(env, list(ctx.args))
        given = {
            "env": env, "model": model, "base_url": base_url, "api_key_var": api_key_var,
            "num_examples": num_examples, "rollouts_per_example": rollouts_per_example,
            "concurrency": concurrency, "seed": seed, "timeout": timeout, "device": device, "max_retries": max_retries,
            "pass_metric": pass_metric, "pass_threshold": pass_threshold, "price_input": price_input, "price_output": price_output,
            "env_args": parse_json_object(env_args, "-a/--env-args") if env_args is not None else None,
            "sampling_args": parse_json_object(sampling_args, "-S/--sampling-args") if sampling_args is not None else None,
        }
        if env is None and resume is None and config_file is None:
            raise errors.UsageError("name an environment (see `lmgym list`), give --config FILE, or give --resume RUN_DIR")
        stored = read_metadata(resume)["config"] if resume else None
        config = resolve_config(given, stored, resume, path=config_file, overrides=overrides)
        environment = load_environment(config.env, **config.env_args)  # before any directory is made
        created_here = resume is None and (output_dir is None or not output_dir.exists())
        run_dir = resume or output_dir or claim_run_dir("eval", config.env, config.model)
        with RunLock(run_dir), discard_if_unused(run_dir, created_here):
            if resume is None:
                require_fresh_dir(run_dir)
            exit_code = evaluate(EvalRun(environment, config, run_dir))
        if audit:
            print_audit(run_dir)
        if save_dataset is not None and exit_code == 0:
            export_run(run_dir, "hf", save_dataset, overwrite=True)
            console.print(f"dataset: {save_dataset}")
    raise typer.Exit(exit_code)


FUNCTION_CALLING = "chatml-function-calling"  # the embedded server's chat format for tool environments


def evaluate(run: EvalRun) -> int:
    """Run and summarise one evaluation (its directory locked by the caller); returns the exit code."""
    config, run_dir, summary = run.config, run.run_dir, run.summary
    warn_if_fewer(run)
    with contextlib.ExitStack() as stack:
        offers_tools = run.environment.offers_tools(run.examples)
        api_key = os.environ.get(config.api_key_var)
        client, concurrency = open_client(config, offers_tools, api_key, stack)
        exit_code = 0
        try:
            with progress_bar() as progress:
                task = progress.add_task(f"{config.env} × {config.model}", total=None, reward="")
                run_loop(run_with_progress(run, client, concurrency, progress, task))
        except KeyboardInterrupt:
            exit_code = INTERRUPTED
            console.print(f"[yellow]interrupted.[/] {summary.rollouts} rollouts are saved; continue with:\n  lmgym eval --resume {run_dir}")
        except errors.ModelError as exc:
            exit_code = 1
            print_error(exc)
            if isinstance(exc, errors.ModelAuthError) and api_key is None:
                console.print(
                    f"no API key was sent: the environment variable {config.api_key_var} is unset "
                    f"(set it, or name another with --api-key-var)", highlight=False, markup=False,
                )
            console.print(f"{summary.rollouts} rollouts are saved in {run_dir / RESULTS_FILE}; after fixing this, continue with:\n  lmgym eval --resume {run_dir}")
    print_summary(summary, run_dir)
    if offers_tools and summary.metric_counts["tool_calls"] and not summary.metric_sums["tool_calls"]:
        console.print(
            f"[yellow]note:[/] {config.env} offers tools, but no rollout called one: does the model (or its "
            "server's chat format) support tool calls?", highlight=False,
        )
    return exit_code


def open_client(config: EvalConfig, offers_tools: bool, api_key: str | None, stack: contextlib.ExitStack) -> tuple[Any, int]:
    """The client the run's rollouts call, and how many requests it may have in flight."""
    if config.embedded:
        with console.status("starting the embedded model (SmolLM2-135M-Instruct on llama.cpp)..."):
            # llama.cpp's default chat format returns tool calls as text: ask for its function-calling one
            server = stack.enter_context(EmbeddedServer(chat_format=FUNCTION_CALLING if offers_tools else None))
        console.print(
            "[dim]embedded model: llama.cpp serves one request at a time and ignores n>1, "
            "so lmgym sends one request per rollout, one at a time.[/]"
        )
        return OpenAIClient(server.base_url, api_key, timeout=config.timeout, max_retries=config.max_retries), 1
    if runs_in_process(config.model, config.base_url):
        return in_process_client(config, offers_tools), config.concurrency
    if api_key is None and config.base_url is None:
        raise errors.UsageError(f"no API key: set the environment variable {config.api_key_var} (or pick another with --api-key-var)")
    return OpenAIClient(config.base_url, api_key, timeout=config.timeout, max_retries=config.max_retries), config.concurrency


def in_process_client(config: EvalConfig, offers_tools: bool) -> Any:
    """The model named by --model loaded here, behind the training engine's client."""
    with console.status(f"loading {config.model} in this process..."):
        from lmgym.train.policy_client import DEFAULT_MAX_TOKENS, open_policy_client
        from lmgym.train.session import resolve_device

        policy = open_policy_client(config.model, device=resolve_device(config.device), offers_tools=offers_tools, seed=config.seed or 0)
    calls = f"; tool calls read as {policy.tool_format.name}" if policy.tool_format is not None else ""
    console.print(
        f"[dim]in this process: {config.model} ({policy.parameters / 1e6:.1f}M parameters) on {policy.device}{calls}; "
        f"replies stop at {DEFAULT_MAX_TOKENS} tokens unless the environment or --sampling-args sets max_tokens.[/]",
        highlight=False,
    )
    return policy.client


def warn_if_fewer(run: EvalRun) -> None:
    """`-n 500` on a 100-example eval set runs 100: say so, so no rate is computed from 500."""
    if note := run.fewer_note:  # metadata.json's notes say it too
        console.print(f"[yellow]note:[/] {note}", highlight=False)


async def run_with_progress(run: EvalRun, client: Any, concurrency: int, progress: Progress, task: Any) -> None:
    """`run.run` keeping the progress bar's task up to date; closes `client` at the end."""
    def on_start(plan: EvalPlan) -> None:
        progress.update(task, total=plan.total, completed=len(plan.done), reward=reward_text(run.summary))

    def on_record(record: dict[str, Any], summary: Summary) -> None:
        progress.update(task, advance=1, reward=reward_text(summary))

    try:
        await run.run(client, concurrency=concurrency, on_start=on_start, on_record=on_record)
    finally:
        await client.aclose()


def reward_text(summary: Summary) -> str:
    return f"reward {summary.mean_reward:.3f}" if summary.rewards else ""


def progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[reward]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_summary(summary: Summary, run_dir: Path) -> None:
    data = summary.to_dict()
    table = Table(title="Evaluation summary", show_header=True, header_style="bold")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("rollouts (scored)", f"{data['rollouts']} ({data['scored']})")
    table.add_row("reward", f"{_fmt(data['reward_mean'])} ± {_fmt(data['reward_std'])}")
    for name, value in data["metrics"].items():
        table.add_row(f"  {name}", _fmt(value))
    for k, value in data["pass_at_k"].items():
        table.add_row(f"pass@{k} ({data['pass_metric']} ≥ {data['pass_threshold']:g})", _fmt(value))
    table.add_row("errors", _errors_text(data["errors"]))
    table.add_row("tokens in / out", f"{data['prompt_tokens']:,} / {data['completion_tokens']:,}")
    if data["cost_usd"] is not None:
        table.add_row("cost (USD)", f"{data['cost_usd']:.4f}")
    table.add_row("latency p50 / p95 (s)", f"{_fmt(data['latency_p50_s'], 2)} / {_fmt(data['latency_p95_s'], 2)}")
    Console().print(table)
    if "tasks" in data:
        Console().print(_per_task_table(data["tasks"]))
    for kind, message in data["first_errors"].items():
        console.print(f"first {kind} error: {message}", highlight=False, markup=False)
    if data["first_errors"]:
        console.print(f"every error is in {run_dir / RESULTS_FILE}, under each failed rollout's \"error\"", highlight=False, markup=False)
    console.print(f"results: {run_dir / RESULTS_FILE}")


def _errors_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind}: {count}" for kind, count in sorted(errors.items())) or "none"


def _per_task_table(tasks: dict[str, dict[str, Any]]) -> Table:
    """One column per task (environment of an EnvGroup); a metric a task lacks shows as –."""
    table = Table(title="Per task", show_header=True, header_style="bold")
    table.add_column("measure")
    for name in tasks:
        table.add_column(name, justify="right")
    rows: dict[str, list[str]] = {
        "rollouts (scored)": [f"{t['rollouts']} ({t['scored']})" for t in tasks.values()],
        "reward": [f"{_fmt(t['reward_mean'])} ± {_fmt(t['reward_std'])}" for t in tasks.values()],
    }
    metrics = sorted({m for t in tasks.values() for m in t["metrics"]})
    for metric in metrics:
        rows[f"  {metric}"] = [_fmt(t["metrics"].get(metric)) for t in tasks.values()]
    ks = sorted({k for t in tasks.values() for k in t["pass_at_k"]}, key=int)
    for k in ks:
        rows[f"pass@{k}"] = [_fmt(t["pass_at_k"].get(k)) for t in tasks.values()]
    rows["errors"] = [_errors_text(t["errors"]) for t in tasks.values()]
    for measure, cells in rows.items():
        table.add_row(measure, *cells)
    return table
