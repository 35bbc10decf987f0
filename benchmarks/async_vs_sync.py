"""Does asynchronous generation hide the generation time? Synchronous vs 1- and 2-step-stale GRPO.

SmolLM2-135M-Instruct (float32, full fine-tuning) on the bundled `arithmetic`
environment (sums up to 50, answer = the reply's last number), 2 prompts × 8 completions
per step, at most 32 new tokens, temperature 1.0, the "grpo" loss, lr 1e-5, truncated
importance sampling (cap 2), seed 0, for N steps; then a greedy evaluation on 50
held-out examples.

On a GPU box generation runs on its own device (vLLM) and the trainer on another. On
one 2-core CPU both would fight for the same cores, so that split is modelled honestly
and identically for every run: torch uses one thread per Python thread, the generation
thread (the in-process engine on its own weight snapshot, `AsyncOrchestrator`) is pinned
to core 0 and the trainer's thread to core 1. The synchronous run uses the same two
threads with `max_off_policy_steps = 0`: batch i waits for the weights of step i, so the
phases alternate. (The in-process engine stands in for vLLM here: the CPU build of vLLM
needs two minutes of warm-up per run and its own environment; see
lmgym/train/engines/vllm/ for that back end.)

Reported per run, over steps 2..N (step 1 includes warm-up): median seconds per step;
the median time of each phase alone (`generation_s`: sampling one batch and scoring it,
in the generation thread; `train_s`: the trainer's step on a batch that is ready); the
ideal, max(generation, training), which a perfectly overlapped run reaches, and
sync = generation + training; completion tokens/s; staleness; and the held-out reward
after N steps. Target: the async step within 15% of the ideal (≥ 1.6× the synchronous
step when the phases are of similar length), with the final reward within noise of the
synchronous run. Each run is a fresh subprocess of this script. About 2-3 minutes per
run on 2 idle cores: keep the machine otherwise idle.

    HF_HUB_OFFLINE=1 python benchmarks/async_vs_sync.py [--steps 8] [--bounds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
RESULT_PREFIX = "ASYNC_VS_SYNC_RESULT "
GENERATION_CORE, TRAINER_CORE = 0, 1


def overrides(steps: int, bound: int, run_dir: str) -> list[str]:
    return [
        "model.name=smollm2", "env.name=arithmetic",
        'env.args={operators = "+", max_value = 50, answer_format = "last-number", num_eval_examples = 50}',
        "algorithm.prompts_per_step=2", "algorithm.group_size=8", "algorithm.loss=grpo",
        f"algorithm.max_off_policy_steps={bound}", "algorithm.importance_sampling=tis",
        "sampling.temperature=1.0", "sampling.max_tokens=32", "trainer.lr=1e-5", "trainer.micro_batch_size=8",
        f"trainer.max_steps={steps}", "trainer.max_seq_len=256", "trainer.seed=0",
        f"eval.every={steps}", "eval.num_examples=50", "checkpoint.every=0", "logging.console_every=0",
        "logging.samples_per_step=0", f"logging.output_dir={run_dir}",
    ]


def run_one(steps: int, bound: int) -> None:
    """In a subprocess: train with generation and training pinned to one core each."""
    import torch

    from lmgym.train import orchestrator as orch
    from lmgym.train.config import load_config
    from lmgym.train.metrics import NullSink
    from lmgym.train.session import build_loop

    torch.set_num_threads(1)
    os.sched_setaffinity(0, {TRAINER_CORE})  # this (the trainer's) thread
    produce = orch.AsyncOrchestrator._produce

    def pinned(self, client, first):
        os.sched_setaffinity(0, {GENERATION_CORE})  # the generation thread
        torch.set_num_threads(1)
        return produce(self, client, first)

    orch.AsyncOrchestrator._produce = pinned
    run_dir = tempfile.mkdtemp(prefix=f"async-{bound}-")
    config = load_config(None, overrides(steps, bound, run_dir))
    loop = build_loop(config, Path(run_dir), NullSink())
    if not isinstance(loop.orchestrator, orch.AsyncOrchestrator):  # bound 0: the same two threads, alternating
        old = loop.orchestrator
        loop.orchestrator = orch.AsyncOrchestrator(
            old.env, old.engine, old.data, old.algorithm, old.sampling, old.max_seq_len, max_off_policy_steps=0
        )
    rows = []

    class Collect(NullSink):
        def log(self, step, metrics):
            rows.append(dict(metrics, step=step))

    loop.sink = Collect()
    loop.run()
    print(RESULT_PREFIX + json.dumps(rows), flush=True)


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows if key in r)


def summarise(bound: int, rows: list[dict]) -> dict:
    steps = [r for r in rows if r["step"] >= 2 and "step_s" in r]
    final = [r for r in rows if "eval/reward" in r][-1]
    generation, training = median(steps, "generation_s"), median(steps, "train_s")
    return {
        "bound": bound,
        "step_s": median(steps, "step_s"),
        "generation_s": generation,
        "train_s": training,
        "ideal_s": max(generation, training),
        "sum_s": generation + training,
        "tokens_per_s": sum(r["completion_tokens"] for r in steps) / sum(r["step_s"] for r in steps),
        "staleness": statistics.mean(r["staleness"] for r in steps),
        "eval_reward": final["eval/reward"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--bounds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        return run_one(args.steps, args.child)
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("this benchmark pins generation and training to two different cores; this machine offers fewer")
    results = []
    for bound in args.bounds:
        print(f"running max_off_policy_steps={bound} ...", flush=True)
        out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", str(bound)], capture_output=True, text=True)
        line = next((l for l in out.stdout.splitlines() if l.startswith(RESULT_PREFIX)), None)
        if line is None:
            sys.exit(f"run with bound {bound} failed:\n{out.stderr[-3000:]}")
        results.append(summarise(bound, json.loads(line[len(RESULT_PREFIX):])))
    sync = next((r for r in results if r["bound"] == 0), None)
    header = ["max_off_policy_steps", "s/step", "generation s", "train s", "ideal max(g,t)", "g+t", "step/ideal", "speed-up vs sync", "tokens/s", "staleness", f"eval reward ({args.steps} steps)"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in results:
        speedup = f"{sync['step_s'] / r['step_s']:.2f}×" if sync else "–"
        print(
            f"| {r['bound']} | {r['step_s']:.2f} | {r['generation_s']:.2f} | {r['train_s']:.2f} | {r['ideal_s']:.2f} | {r['sum_s']:.2f} "
            f"| {r['step_s'] / r['ideal_s']:.2f} | {speedup} | {r['tokens_per_s']:.1f} | {r['staleness']:.2f} | {r['eval_reward']:.3f} |"
        )


if __name__ == "__main__":
    main()
