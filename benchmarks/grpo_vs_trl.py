"""How fast is lmgym's GRPO trainer next to TRL's `GRPOTrainer`? Prints a table.

Both train SmolLM2-135M-Instruct (`lmgym.train.models.load_model("smollm2")`, a fresh
copy each, float32, full fine-tuning, no LoRA) on the same task, two-operand addition
("What is a+b?", the bundled `arithmetic` environment with operators "+" and operands up
to 50), synchronously (generate, then train, on the same CPU), with the same settings:
2 prompts × 8 completions per step (16), at most 32 new tokens, temperature 1.0, top-p 1,
no top-k, beta 0 (no reference model), the "grpo" loss (clip 0.2/0.2, per-sequence token
mean), rewards scaled by the group std, lr 1e-5 constant, grad-norm clip 1.0, one
optimizer step per batch (μ = 1), no gradient checkpointing, seed 0.

  * lmgym: `lmgym.train.session.train` from a config of dotted overrides; per-step
    `step_s`, `generation_s` and `completion_tokens` are read from RUN_DIR/metrics.jsonl.
  * TRL: `GRPOTrainer` on a `datasets.Dataset` whose `prompt` column holds the very chat
    messages of the environment's examples (system prompt + question) and whose reward
    function scores each completion with the environment's own rubric (correct integer in
    <answer> tags: 1.0, plus 0.2 for the format). The step time is the wall clock from
    `on_step_begin` to `on_step_end` of a `TrainerCallback`; the generation time wraps
    TRL's `_generate_single_turn`; completion tokens are counted from the `completion_ids`
    the reward function receives (up to and including the first end-of-turn token, as
    lmgym counts them). TRL's own defaults are kept where lmgym has no counterpart (its
    fused AdamW, its entropy logging); its defaults that differ from the settings above
    are overridden: `gradient_checkpointing=False` (TRL defaults to on; lmgym never
    checkpoints), `loss_type="grpo"` (TRL defaults to "dapo"), `lr_scheduler_type=
    "constant"` (transformers defaults to linear decay), `use_cpu=True`, `bf16=False`.

Each trainer runs in its own fresh subprocess of this script (TRL first, then lmgym), so
neither inherits the other's memory, caches or allocator state; the peak RSS of each
process is reported too. torch's thread count is left at its default (the same in both
processes) and printed. Seconds per step: the median over steps 2..N (step 1 is warm-up)
and the mean over all N. Completion tokens/s: tokens sampled in steps 2..N over the time
of those steps. Target: TRL s/step ÷ lmgym s/step ≥ 2.

    HF_HUB_OFFLINE=1 python benchmarks/grpo_vs_trl.py [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "smollm2"
ENV_NAME = "arithmetic"
ENV_ARGS = {"operators": "+", "max_value": 50}
PROMPTS_PER_STEP = 2
GROUP_SIZE = 8
MAX_TOKENS = 32
TEMPERATURE = 1.0
LR = 1e-5
SEED = 0
RESULT_PREFIX = "GRPO_VS_TRL_RESULT "


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- lmgym side


def run_lmgym(steps: int) -> dict:
    import torch

    from lmgym.train.config import load_config
    from lmgym.train.metrics import METRICS_FILE
    from lmgym.train.session import train

    with tempfile.TemporaryDirectory() as run_dir:
        config = load_config(None, [
            f"model.name={MODEL}",
            f"env.name={ENV_NAME}",
            'env.args={operators = "+", max_value = 50}',
            f"sampling.max_tokens={MAX_TOKENS}",
            f"sampling.temperature={TEMPERATURE}",
            "sampling.top_p=1.0",
            "algorithm.loss=grpo",
            f"algorithm.prompts_per_step={PROMPTS_PER_STEP}",
            f"algorithm.group_size={GROUP_SIZE}",
            "algorithm.beta=0",
            "algorithm.num_iterations=1",
            "algorithm.scale_rewards=group",
            f"trainer.lr={LR}",
            "trainer.lr_schedule=constant",
            "trainer.max_grad_norm=1.0",
            f"trainer.max_steps={steps}",
            f"trainer.micro_batch_size={PROMPTS_PER_STEP * GROUP_SIZE}",
            "trainer.max_seq_len=256",
            f"trainer.seed={SEED}",
            "eval.every=0",
            "checkpoint.every=0",
            "logging.console_every=0",
            "logging.jsonl=true",
            f"logging.output_dir={run_dir}",
            "sft.warm_start=false",
        ])
        assert config.env.args == ENV_ARGS, config.env.args
        started = time.perf_counter()
        train(config, Path(run_dir))
        total = time.perf_counter() - started
        rows = [json.loads(line) for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines()]
    rows = [r for r in rows if "step_s" in r]
    return {
        "torch_threads": torch.get_num_threads(),
        "step_s": [r["step_s"] for r in rows],
        "generation_s": [r["generation_s"] for r in rows],
        "completion_tokens": [r["completion_tokens"] for r in rows],
        "reward": [r.get("reward", float("nan")) for r in rows],
        "total_s": total,
        "peak_rss_mb": peak_rss_mb(),
        "notes": [],
    }


# ------------------------------------------------------------------------------- TRL side


def run_trl(steps: int) -> dict:
    import asyncio

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from lmgym import load_environment
    from lmgym.train.models import load_model
    from lmgym.types import Example, Rollout, Turn

    env = load_environment(ENV_NAME, **ENV_ARGS)
    dataset = Dataset.from_list([
        {"prompt": [dict(m) for m in ex.prompt], "answer": ex.answer, "example_id": ex.id} for ex in env.dataset
    ])
    tokens_per_call: list[int] = []
    rewards_per_call: list[float] = []

    def arithmetic_reward(prompts, completions, completion_ids, answer, example_id, **_kwargs) -> list[float]:
        """The environment's rubric, one group (the completions of one prompt) at a time."""
        rollouts = [
            Rollout(Example(id=eid, prompt=list(prompt), answer=ans), index=i, turns=[Turn(assistant=completion[-1])])
            for i, (prompt, completion, ans, eid) in enumerate(zip(prompts, completions, answer, example_id))
        ]
        for start in range(0, len(rollouts), GROUP_SIZE):
            asyncio.run(env.score_group(rollouts[start : start + GROUP_SIZE]))
        failed = [r.error for r in rollouts if r.error is not None]
        if failed:
            raise RuntimeError(f"the rubric failed: {failed[0]}")
        tokens_per_call.append(sum(len(ids) for ids in completion_ids))
        rewards_per_call.append(sum(r.reward for r in rollouts) / len(rollouts))
        return [r.reward for r in rollouts]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.started = 0.0
            self.step_s: list[float] = []
            self.logs: list[dict] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_s.append(time.perf_counter() - self.started)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self.logs.append(dict(logs))

    model, tokenizer = load_model(MODEL)
    batch = PROMPTS_PER_STEP * GROUP_SIZE
    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(
            output_dir=output_dir,
            use_cpu=True,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            seed=SEED,
            data_seed=SEED,
            max_steps=steps,
            learning_rate=LR,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            steps_per_generation=1,
            num_generations=GROUP_SIZE,
            max_completion_length=MAX_TOKENS,
            temperature=TEMPERATURE,
            top_p=1.0,
            top_k=0,
            beta=0.0,
            num_iterations=1,
            epsilon=0.2,
            loss_type="grpo",
            scale_rewards="group",
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
        )
        timer = StepTimer()
        trainer = GRPOTrainer(
            model=model, reward_funcs=arithmetic_reward, args=args, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[timer],
        )
        generation_s: list[float] = []
        generate = trainer._generate_single_turn

        def timed_generate(*a, **kw):
            started = time.perf_counter()
            try:
                return generate(*a, **kw)
            finally:
                generation_s.append(time.perf_counter() - started)

        trainer._generate_single_turn = timed_generate
        notes = [
            f"TRL generation_config.use_cache={trainer.generation_config.use_cache}, "
            f"optimizer={args.optim}, grad checkpointing={args.gradient_checkpointing}, "
            f"generation_batch_size={args.generation_batch_size}",
        ]
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    step_logs = [log for log in timer.logs if "reward" in log]
    return {
        "torch_threads": torch.get_num_threads(),
        "step_s": timer.step_s,
        "generation_s": generation_s,
        "completion_tokens": [float(t) for t in tokens_per_call],
        "reward": rewards_per_call,
        "logged_mean_length": [log.get("completions/mean_length") for log in step_logs],
        "total_s": total,
        "peak_rss_mb": peak_rss_mb(),
        "notes": notes,
    }


# ---------------------------------------------------------------------------------- main


def child(which: str, steps: int) -> None:
    result = run_trl(steps) if which == "trl" else run_lmgym(steps)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def run_child(which: str, steps: int, console) -> dict:
    console.print(f"[bold]{which}[/]: {steps} steps in a fresh process...")
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, __file__, "--child", which, "--steps", str(steps)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines = process.stdout.splitlines()
    found = [line[len(RESULT_PREFIX):] for line in lines if line.startswith(RESULT_PREFIX)]
    if process.returncode or not found:
        console.print(process.stdout[-4000:], markup=False)
        console.print(process.stderr[-8000:], markup=False)
        raise SystemExit(f"the {which} run failed (exit status {process.returncode})")
    result = json.loads(found[-1])
    warnings = sorted({line.strip() for line in process.stderr.splitlines() if "warn" in line.lower()})
    result["warnings"] = warnings
    console.print(f"  done in {time.perf_counter() - started:.0f}s (process wall time)")
    return result


def summarise(result: dict) -> dict:
    steps, tokens, generation = result["step_s"], result["completion_tokens"], result["generation_s"]
    later = slice(1, None) if len(steps) > 1 else slice(None)
    return {
        "median": statistics.median(steps[later]),
        "mean": statistics.fmean(steps),
        "generation": statistics.median(generation[later]) if generation else float("nan"),
        "tokens_per_step": statistics.fmean(tokens),
        "tokens_per_s": sum(tokens[later]) / sum(steps[later]),
        "reward": statistics.fmean(result["reward"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per trainer (default 8)")
    parser.add_argument("--child", choices=("trl", "lmgym"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    if args.child:
        child(args.child, args.steps)
        return

    import torch
    import transformers
    import trl
    from rich.console import Console
    from rich.table import Table

    console = Console()
    results = {which: run_child(which, args.steps, console) for which in ("trl", "lmgym")}
    threads = {r["torch_threads"] for r in results.values()}
    stats = {which: summarise(r) for which, r in results.items()}

    for which, result in results.items():
        console.print(f"{which} per-step s: " + " ".join(f"{s:.2f}" for s in result["step_s"]))
        console.print(f"{which} per-step generation s: " + " ".join(f"{s:.2f}" for s in result["generation_s"]))
        console.print(f"{which} per-step completion tokens: " + " ".join(f"{t:.0f}" for t in result["completion_tokens"]))
        for note in result["notes"]:
            console.print(f"{which} note: {note}", markup=False)
        for warning in result["warnings"][:10]:
            console.print(f"{which} warning: {warning[:300]}", markup=False)

    later = f"steps 2..{args.steps}" if args.steps > 1 else "step 1"
    table = Table(title=(
        f"GRPO, lmgym vs TRL {trl.__version__}: SmolLM2-135M-Instruct (float32, full fine-tuning), "
        f"arithmetic a+b (max 50), {PROMPTS_PER_STEP} prompts × {GROUP_SIZE} completions/step, "
        f"≤{MAX_TOKENS} new tokens, T={TEMPERATURE}, beta 0, lr {LR:g}, μ=1, {args.steps} steps, seed {SEED}; "
        f"CPU, torch {torch.__version__} threads {'/'.join(map(str, sorted(threads)))}, "
        f"transformers {transformers.__version__}; each trainer in a fresh process"
    ))
    table.add_column("trainer")
    table.add_column(f"s/step (median {later})", justify="right")
    table.add_column("s/step (mean, all)", justify="right")
    table.add_column(f"generation s/step (median {later})", justify="right")
    table.add_column("completion tokens/step", justify="right")
    table.add_column(f"completion tokens/s ({later})", justify="right")
    table.add_column("mean reward", justify="right")
    table.add_column("peak RSS (MB)", justify="right")
    names = {"trl": f"TRL GRPOTrainer (transformers generate)", "lmgym": "lmgym train (LocalEngine)"}
    for which in ("trl", "lmgym"):
        s = stats[which]
        table.add_row(
            names[which], f"{s['median']:.2f}", f"{s['mean']:.2f}", f"{s['generation']:.2f}",
            f"{s['tokens_per_step']:.0f}", f"{s['tokens_per_s']:.0f}", f"{s['reward']:.3f}",
            f"{results[which]['peak_rss_mb']:.0f}",
        )
    ratio = stats["trl"]["median"] / stats["lmgym"]["median"]
    mean_ratio = stats["trl"]["mean"] / stats["lmgym"]["mean"]
    table.add_row("ratio TRL / lmgym s/step (target ≥ 2.0)", f"{ratio:.2f}", f"{mean_ratio:.2f}", "", "", "", "", "")
    console.print(table)


if __name__ == "__main__":
    main()
