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
    `step_s`, `generation_s` (the rollout loop through the in-process engine, rubric
    scoring included) and `completion_tokens` are read from RUN_DIR/metrics.jsonl.
  * TRL: `GRPOTrainer` on a `datasets.Dataset` whose `prompt` column holds the very chat
    messages of the environment's examples (system prompt + question) and whose reward
    function scores each completion with the environment's own rubric (`answer_format=
    "last-number"`: 1.0 when the reply's last integer is the sum; with <answer> tags
    SmolLM2-135M scores 0 everywhere, so every advantage would be 0 and nothing learnt). The step time is the wall clock from
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
and the mean over all N; "rest" is a step minus its generation (logprobs, loss, backward,
optimizer step and bookkeeping). Completion tokens/s: tokens sampled in steps 2..N over
the time of those steps. Target: TRL s/step ÷ lmgym s/step ≥ 2. Run it on an idle
machine: with 2 cores, one other busy process makes torch's threads contend and can slow
either trainer several-fold, so the share of the CPU that other processes used during
each run is printed (from /proc/stat), with a warning above 5%. Takes about 7 minutes
on 2 cores.

    HF_HUB_OFFLINE=1 python benchmarks/grpo_vs_trl.py [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from trainer_runs import RESULT_PREFIX, kv_cache_note, peak_rss_mb, run_child, step_timer, summarise, time_generation

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MODEL = "smollm2"
ENV_NAME = "arithmetic"
ENV_ARGS = {"operators": "+", "max_value": 50, "answer_format": "last-number"}
PROMPTS_PER_STEP = 2
GROUP_SIZE = 8
MAX_TOKENS = 32
TEMPERATURE = 1.0
LR = 1e-5
SEED = 0


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
            'env.args={operators = "+", max_value = 50, answer_format = "last-number"}',
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
        "total_label": "session.train() (env and model load, steps, final save)",
        "peak_rss_mb": peak_rss_mb(),
        "notes": [
            "LocalEngine samples with a KV cache; optimizer torch.optim.AdamW(fused=True)",
            "samples skipped (zero advantage, exact) per step: "
            + " ".join(f"{r.get('samples_skipped_zero_advantage', 0):.0f}" for r in rows),
        ],
    }


# ------------------------------------------------------------------------------- TRL side


def run_trl(steps: int) -> dict:
    import asyncio

    import torch
    from datasets import Dataset
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

    # The reward is the environment's: the right number at the end scores 1.0, prose 0.
    probe = env.dataset[0]
    right, prose = f"It is {probe.answer}", "I cannot tell."
    scores = arithmetic_reward(
        [probe.prompt] * 2, [[{"role": "assistant", "content": c}] for c in (right, prose)], [[0], [0]],
        [probe.answer] * 2, [probe.id] * 2,
    )
    assert [round(x, 6) for x in scores] == [1.0, 0.0], scores
    tokens_per_call.clear()
    rewards_per_call.clear()

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
        timer = step_timer()
        trainer = GRPOTrainer(
            model=model, reward_funcs=arithmetic_reward, args=args, train_dataset=dataset,
            processing_class=tokenizer, callbacks=[timer],
        )
        generation_s, widths = time_generation(trainer)
        started = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - started
    notes = [
        kv_cache_note(widths),
        (f"optimizer {args.optim.value}, gradient checkpointing {args.gradient_checkpointing}, "
         f"generation_batch_size {args.generation_batch_size}, loss_type {args.loss_type}"),
    ]
    step_logs = [log for log in timer.logs if "reward" in log]
    logged = [log.get("completions/mean_length", float("nan")) * batch for log in step_logs]
    agree = len(logged) == len(tokens_per_call) and all(abs(a - b) < 0.5 for a, b in zip(logged, tokens_per_call))
    notes.append(f"tokens counted in the reward function {'match' if agree else 'DO NOT match'} "
                 f"TRL's logged completions/mean_length × {batch}")
    return {
        "torch_threads": torch.get_num_threads(),
        "step_s": timer.step_s,
        "generation_s": generation_s,
        "completion_tokens": [float(t) for t in tokens_per_call],
        "reward": rewards_per_call,
        "total_s": total,
        "total_label": "trainer.train() (steps, setup inside train())",
        "peak_rss_mb": peak_rss_mb(),
        "notes": notes,
    }


# ---------------------------------------------------------------------------------- main


def child(which: str, steps: int) -> None:
    result = run_trl(steps) if which == "trl" else run_lmgym(steps)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


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
    results = {which: run_child(which, args.steps, console, script=__file__) for which in ("trl", "lmgym")}
    stats = {which: summarise(r) for which, r in results.items()}
    threads = sorted({r["torch_threads"] for r in results.values()})

    for which, result in results.items():
        console.print(f"{which}: step s      " + " ".join(f"{x:6.2f}" for x in result["step_s"]))
        console.print(f"{which}: generation s" + " ".join(f"{x:6.2f}" for x in result["generation_s"]))
        console.print(f"{which}: tokens      " + " ".join(f"{x:6.0f}" for x in result["completion_tokens"]))
        console.print(f"{which}: mean reward {stats[which]['reward']:.3f}; "
                      f"{result['total_label']}: {result['total_s']:.0f}s", markup=False)
        for note in result["notes"]:
            console.print(f"{which}: {note}", markup=False)
        for warning in result["warnings"][:10]:
            console.print(f"{which} warned: {warning[:300]}", markup=False)
    busy = max(r["others_cpu_share"] for r in results.values())
    if busy > 0.05:
        console.print(f"[yellow]warning: other processes used up to {busy:.0%} of the CPU during a run; "
                      f"they compete with torch's threads and may inflate the timings[/]")

    later = f"steps 2..{args.steps}" if args.steps > 1 else "step 1"
    console.print(
        f"SmolLM2-135M-Instruct, float32, full fine-tuning; arithmetic a+b (operands 0..50); "
        f"{PROMPTS_PER_STEP} prompts × {GROUP_SIZE} completions per step, ≤ {MAX_TOKENS} new tokens, "
        f"temperature {TEMPERATURE}, beta 0, lr {LR:g} constant, μ = 1, {args.steps} steps, seed {SEED}; "
        f"CPU, torch {torch.__version__} with {'/'.join(map(str, threads))} threads, "
        f"transformers {transformers.__version__}, trl {trl.__version__}; each trainer in a fresh process. "
        f"Medians over {later} (mean: all steps); gen. = generation, rest = the step minus generation; "
        f"tokens/s = completion tokens sampled per second of step time ({later}).",
        markup=False,
    )
    table = Table(title=f"GRPO on CPU, synchronous: lmgym vs TRL GRPOTrainer, {args.steps} steps")
    table.add_column("trainer")
    for column in ("s/step median", "s/step mean", "gen. s/step", "rest s/step", "tokens/s", "peak RSS MB"):
        table.add_column(column, justify="right")
    names = {"trl": f"TRL {trl.__version__}", "lmgym": "lmgym"}
    for which in ("trl", "lmgym"):
        s = stats[which]
        table.add_row(
            names[which], f"{s['median']:.2f}", f"{s['mean']:.2f}", f"{s['generation']:.2f}", f"{s['rest']:.2f}",
            f"{s['tokens_per_s']:.1f}", f"{results[which]['peak_rss_mb']:,.0f}",
        )
    trl_s, ours = stats["trl"], stats["lmgym"]
    table.add_row(
        "TRL ÷ lmgym (target ≥ 2)", f"{trl_s['median'] / ours['median']:.2f}",
        f"{trl_s['mean'] / ours['mean']:.2f}", f"{trl_s['generation'] / ours['generation']:.2f}",
        f"{trl_s['rest'] / ours['rest']:.2f}", "", "",
    )
    console.print(table)


if __name__ == "__main__":
    main()
