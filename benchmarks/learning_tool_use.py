"""Does a model learn to use a tool? SFT on a noisy teacher's tool-call episodes, then GRPO.

configs/calculator-tools.toml as it ships: products of 3- and 4-digit numbers that a
small model cannot do in its head, the `calculate` tool of the `calculator` environment,
a supervised warm start on the environment's noisy-teacher episodes (a share of answers
guessed without the tool, a share of calls mistyped), then GRPO on the model's own
multi-turn rollouts. On held-out questions (greedy) it prints the tool-call rate and the
correct-answer rate before SFT, after SFT and after GRPO, the wall time of each phase,
and how many rollouts were split per turn for template reasons (the target is none).
Targets (issue 16): GRPO adds ≥ 0.2 correctness over SFT and reaches ≥ 0.8, in ≤ 10
minutes on 2 cores.

`--config configs/stockroom-tools.toml` runs the multi-turn case: the `stockroom`
environment, where every episode needs at least four tool calls (read two counts, write
two) and is graded on the final stock; the target there is that GRPO trains on those
multi-turn rollouts with none split for template reasons.

    python benchmarks/learning_tool_use.py [--config C] [--held-out 100] [KEY=VALUE overrides...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from lmgym.train.config import load_config
from lmgym.train.engines.local import LocalEngine
from lmgym.train.metrics import NullSink
from lmgym.train.orchestrator import DataStream, Orchestrator
from lmgym.train.session import assemble_loop, load_run


class StepLog(NullSink):
    """Keeps the per-step metrics the loop logs (rollouts split per turn, tool calls) and
    prints one line per step, so a long run shows its progress."""

    def __init__(self, console: Console, metric: str) -> None:
        self.console, self.metric, self.steps = console, metric, []

    def log(self, step, metrics, phase="rl"):
        if phase == "rl" and "reward" in metrics:
            self.steps.append(dict(metrics))
            self.console.print(
                f"  step {step}: sampled reward {metrics['reward']:.3f}, {self.metric} {metrics.get(self.metric, 0.0):.3f}, "
                f"tool calls/rollout {metrics.get('tool_calls_per_rollout', 0.0):.2f}", highlight=False)
        elif phase == "sft" and step % 5 == 0:
            self.console.print(f"  sft step {step}: loss {metrics['sft/loss']:.3f}", highlight=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/calculator-tools.toml")
    parser.add_argument("--held-out", type=int, default=100)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. trainer.max_steps=40")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as run_dir:
        config = load_config(args.config, [
            f"logging.output_dir={run_dir}", "logging.console_every=0", "eval.every=0", "checkpoint.every=0",
            f"env.args.num_eval_examples={args.held_out}", *args.overrides,
        ])
        loaded = load_run(config, Path(run_dir))
        metric = loaded.env.rubric.names[0]  # the task's main reward: correct_answer, stock_correct
        sink = StepLog(console, metric)
        held_out = loaded.env.get_eval_examples(args.held_out)
        console.print(f"evaluating the untrained {config.model.name} on {len(held_out)} held-out questions...")
        untrained = Orchestrator(
            loaded.env, LocalEngine(loaded.model, loaded.tokenizer, tool_format=loaded.tool_format),
            DataStream(held_out, seed=0), config.algorithm, config.sampling, config.trainer.max_seq_len,
        ).evaluate(held_out, temperature=0.0)
        started = time.perf_counter()
        loop = assemble_loop(config, Path(run_dir), sink, loaded)  # runs the SFT warm start
        sft_s = time.perf_counter() - started
        console.print(f"SFT done in {sft_s:.0f}s; evaluating, then GRPO...")
        after_sft = loop.orchestrator.evaluate(held_out, temperature=0.0)
        started = time.perf_counter()
        loop.run()
        grpo_s = time.perf_counter() - started
        after_grpo = loop.orchestrator.evaluate(held_out, temperature=0.0)
        loop.orchestrator.close()

    split = sum(step.get("rollouts_split_per_turn", 0.0) for step in sink.steps)
    calls = [step.get("tool_calls_per_rollout", 0.0) for step in sink.steps]
    table = Table(title=f"{config.env.name}, {len(held_out)} held-out tasks, greedy; torch threads {torch.get_num_threads()}")
    for column in ("phase", "tool calls / episode", metric, "wall time (s)"):
        table.add_column(column, justify="left" if column == "phase" else "right")

    def row(name: str, metrics: dict[str, float], seconds: str) -> None:
        table.add_row(name, f"{metrics.get('eval/tool_calls_per_rollout', 0.0):.2f}", f"{metrics['eval/' + metric]:.3f}", seconds)

    row("untrained", untrained, "")
    sft_length = f"{config.sft.max_steps} steps" if config.sft.max_steps else f"{config.sft.epochs} epochs"
    row(f"SFT ({sft_length} on the noisy teacher)", after_sft, f"{sft_s:.1f}")
    row(f"GRPO ({config.trainer.max_steps} steps)", after_grpo, f"{grpo_s:.1f}")
    table.add_row("target", "", "≥ 0.800, GRPO − SFT ≥ 0.200", "SFT+GRPO ≤ 600")
    console.print(table)
    console.print(
        f"GRPO − SFT: {after_grpo['eval/' + metric] - after_sft['eval/' + metric]:+.3f}; "
        f"training tool calls per rollout, first → last step: {calls[0] if calls else 0:.2f} → {calls[-1] if calls else 0:.2f}; "
        f"rollouts split per turn for template reasons: {split:.0f}"
    )


if __name__ == "__main__":
    main()
