"""Does the CPU pipeline learn? SFT warm start, then GRPO, on `reverse-digits`. Prints a table.

configs/reverse-digits.toml as it ships: a tiny Llama with a character tokenizer is
fine-tuned on the environment's noisy-teacher examples (a share of them wrong), then
trained with GRPO on its own samples. Exact match is measured on 1,000 held-out prompts
(greedy) after each phase, with the wall time of each phase.
Targets: ≥ 0.9 exact match after GRPO; SFT + GRPO under 3 minutes on 2 cores.

    python benchmarks/learning_reverse_digits.py [--held-out 1000] [KEY=VALUE overrides...]
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
from lmgym.train.metrics import NullSink
from lmgym.train.session import build_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/reverse-digits.toml")
    parser.add_argument("--held-out", type=int, default=1000)
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. trainer.max_steps=80")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as run_dir:
        config = load_config(args.config, [
            f"logging.output_dir={run_dir}", "logging.console_every=0", "eval.every=0", "checkpoint.every=0",
            f"env.args.num_eval_examples={args.held_out}", *args.overrides,
        ])
        started = time.perf_counter()
        loop = build_loop(config, Path(run_dir), NullSink())  # builds the model and runs the SFT warm start
        sft_s = time.perf_counter() - started
        held_out = loop.orchestrator.env.get_eval_examples(args.held_out)
        console.print(f"SFT done in {sft_s:.1f}s; evaluating on {len(held_out)} held-out prompts...")
        after_sft = loop.orchestrator.evaluate(held_out, temperature=0.0)
        started = time.perf_counter()
        loop.run()
        grpo_s = time.perf_counter() - started
        after_grpo = loop.orchestrator.evaluate(held_out, temperature=0.0)

    table = Table(title=f"reverse-digits, {len(held_out):,} held-out prompts, greedy; torch threads {torch.get_num_threads()}")
    for column in ("phase", "exact match", "digit accuracy", "wall time (s)"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    table.add_row("untrained → SFT (noisy teacher)", f"{after_sft['eval/exact_match']:.3f}", f"{after_sft['eval/digit_accuracy']:.3f}", f"{sft_s:.1f}")
    table.add_row(f"SFT → GRPO ({config.trainer.max_steps} steps)", f"{after_grpo['eval/exact_match']:.3f}", f"{after_grpo['eval/digit_accuracy']:.3f}", f"{grpo_s:.1f}")
    table.add_row("target", "≥ 0.900", "", "SFT+GRPO < 180")
    table.add_row("SFT + GRPO", "", "", f"{sft_s + grpo_s:.1f}")
    console.print(table)


if __name__ == "__main__":
    main()
