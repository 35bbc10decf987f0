"""lmgym's GRPO trainer next to TRL's `GRPOTrainer` on one GPU, bf16: prints a table.

Both train the same randomly initialised models, built here, no download: SmolLM2-135M's
configuration (from the SmolLM2 that `lmgym.train.models` converts from the embedded GGUF)
and a Qwen2.5-1.5B-shaped one (hidden 1536, 28 layers, 12 heads over 2 KV heads, MLP 8960,
tied embeddings), both over SmolLM2's tokenizer and chat template, saved once to a temporary
folder that both trainers load float32 weights from. "bf16 in both" is the same recipe on
both sides: float32 master weights and AdamW state, bfloat16 autocast (lmgym
`model.dtype = "bfloat16"`, TRL `bf16=True`). Random weights rarely end a reply, so nearly
every completion is max_tokens long; the reward is a hash of the reply's text, which
differs for every text, so every group has spread and every sample is trained.

On a GPU: 8 prompts × 8 completions of 128 new tokens per step, temperature 1, beta 0, the
"grpo" loss, one optimizer step per batch, the whole batch in one micro-batch on both
sides, no gradient checkpointing, lr 1e-6 constant, 10 steps; each trainer in a fresh
process (`trainer_runs.run_child`); lmgym samples with `engine.generation` (default
"auto": a static KV cache and CUDA graphs). Reported, as medians over steps 2..N (step 1
holds the compilation): s/step; generation tokens/s (completion tokens ÷ generation time);
trained tokens/s (prompt + completion tokens of the step ÷ step time); MFU, the model FLOPs
of a step, 8·N·(prompt + completion tokens) (2N a token to sample it, 6N to train on it; N
the weights a token passes through, the tied head counted once), ÷ step time ÷ the GPU's
dense bf16 peak (read from its name: H100/H200 SXM 989 TFLOP/s); peak GPU memory
(`max_memory_allocated`); and lmgym ÷ TRL. Target (issue 17): ≥ 3× TRL's steps/s at both
shapes with no more peak memory. A second table times generation alone in a third fresh
process: the in-process sampler on the same 64 prompts, dynamic cache vs the compiled
static one, greedy, with how many rows sample identical tokens and the largest logprob gap.

With no GPU it runs a CPU version to check the script: the 135M shape, 2 prompts × 4
completions of 16 tokens, 4 steps, in float32 (`compiled` falls back to the static cache
there). Not bf16: on a CPU without native bfloat16 (AVX2 only, as here) a bfloat16 matmul
runs 25–45× slower than a float32 one, and the same check in bf16 took over 10 minutes.

The prepared GPU command (about 10 minutes on one H100/H200; `--shapes smollm2-135m` for
half of it):

    .venv/bin/pip install -q -e '.[bench]' && HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gpu_vs_trl.py

On a GPU machine without internet: `benchmarks/gpu_bundle.py` here, then `benchmarks/gpu_run.sh`
there (README). A trainer's process that fails or outlives --child-timeout is reported as
failed and the others still run; where lmgym's compiled generation fails, its process runs
again with the static cache, and the row says so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from trainer_runs import RESULT_PREFIX, ChildFailed, peak_rss_mb, run_child, step_timer, time_generation

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCRIPT = str(Path(__file__).resolve())
ENV_NAME = "text-hash"
SEED = 0
LR = 1e-6
SHAPES = ("smollm2-135m", "qwen2.5-1.5b")
PEAK_BF16_FLOPS = (  # dense, no sparsity; the first name found in the device's name wins
    ("H200 NVL", 835e12), ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
)
ENV_SOURCE = '''"""Written by benchmarks/gpu_vs_trl.py: its prompts, and a reward that differs for any two texts."""
import zlib

from datasets import Dataset

from lmgym import Rubric, SingleTurnEnv

PROMPTS = {prompts}


def text_hash(completion) -> float:
    return zlib.crc32(completion[-1]["content"].encode()) / 2**32 if completion else 0.0


def load_environment():
    rows = [{{"question": p, "answer": ""}} for p in PROMPTS]
    return SingleTurnEnv(Dataset.from_list(rows), None, rubric=Rubric([text_hash]))
'''


@dataclass(frozen=True)
class Setting:
    device: str
    dtype: str  # lmgym's model.dtype; TRL's bf16 flag follows it
    prompts: int
    group: int
    max_tokens: int
    steps: int

    @property
    def rollouts(self) -> int:
        return self.prompts * self.group


GPU = Setting("cuda", "bfloat16", prompts=8, group=8, max_tokens=128, steps=10)
CPU = Setting("cpu", "float32", prompts=2, group=4, max_tokens=16, steps=4)


# ------------------------------------------------------------------------------ the models


def smollm2_base(folder: Path) -> Path:
    """SmolLM2-135M-Instruct's configuration and tokenizer (with lmgym's chat template) in
    `folder`, read from the embedded GGUF: what the random models are built on, no weights."""
    from transformers import AutoConfig

    from lmgym.embedded import find_gguf
    from lmgym.train.models import load_tokenizer

    gguf = find_gguf()
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    load_tokenizer("smollm2").save_pretrained(folder)
    return folder


def shape_config(shape: str, base: Path, tokenizer):
    from transformers import AutoConfig, Qwen2Config

    if shape == "smollm2-135m":
        return AutoConfig.from_pretrained(base, local_files_only=True)
    return Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_theta=1e6, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def build_model(shape: str, base: Path, folder: Path) -> int:
    """Random weights of `shape` on `base`'s tokenizer saved to `folder` (bf16 on disk, read
    back as float32); returns N, the weights a token passes through (for MFU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmgym.train.models import save_model

    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = AutoModelForCausalLM.from_config(shape_config(shape, base, tokenizer), dtype=torch.bfloat16)
    save_model(model, tokenizer, folder)
    embedding = model.get_input_embeddings().weight.numel()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters()) - (0 if tied else embedding)


def write_environment(root: Path, tokenizer, count: int = 64) -> int:
    """`environments/text-hash` under `root`, whose prompts all render to the same number of
    tokens (so every step trains the same count); returns that count."""
    from lmgym.train.render import prompt_ids

    candidates = [f"Write a short story about the number {n}." for n in range(100, 100 + 4 * count)]
    lengths = {text: len(prompt_ids(tokenizer, [{"role": "user", "content": text}])) for text in candidates}
    width, _ = Counter(lengths.values()).most_common(1)[0]
    prompts = [text for text in candidates if lengths[text] == width][:count]
    folder = root / "environments" / ENV_NAME
    folder.mkdir(parents=True)
    (folder / "text_hash.py").write_text(ENV_SOURCE.format(prompts=json.dumps(prompts, indent=1)))
    return width


# ---------------------------------------------------------------------------- the children


def gpu_peak_gb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_initialized() else float("nan")


def run_lmgym(model_dir: str, setting: Setting, steps: int, generation: str) -> dict:
    from lmgym.train.config import load_config
    from lmgym.train.metrics import METRICS_FILE
    from lmgym.train.session import train

    with tempfile.TemporaryDirectory() as run_dir:
        config = load_config(None, [
            f"model.name={model_dir}", f"model.dtype={setting.dtype}", f"env.name={ENV_NAME}",
            f"sampling.max_tokens={setting.max_tokens}", "sampling.temperature=1.0", "sampling.top_p=1.0",
            "algorithm.loss=grpo", f"algorithm.prompts_per_step={setting.prompts}", f"algorithm.group_size={setting.group}",
            "algorithm.beta=0", "algorithm.num_iterations=1", "algorithm.scale_rewards=group",
            f"trainer.lr={LR}", "trainer.lr_schedule=constant", f"trainer.max_steps={steps}",
            f"trainer.micro_batch_size={setting.rollouts}", "trainer.max_seq_len=512", f"trainer.seed={SEED}",
            f"trainer.device={setting.device}", f"engine.generation={generation}",
            "eval.every=0", "checkpoint.every=0", "logging.console_every=0", "logging.jsonl=true",
            f"logging.output_dir={run_dir}", "sft.warm_start=false",
        ])
        train(config, Path(run_dir))
        rows = [json.loads(line) for line in (Path(run_dir) / METRICS_FILE).read_text().splitlines()]
    rows = [r for r in rows if "step_s" in r]
    return {
        "step_s": [r["step_s"] for r in rows], "generation_s": [r["generation_s"] for r in rows],
        "completion_tokens": [r["completion_tokens"] for r in rows], "peak_gpu_gb": gpu_peak_gb(),
        "peak_rss_mb": peak_rss_mb(),
        "notes": [f"engine.generation = {generation}; mismatch_kl (sampler vs trainer) per step: "
                  + " ".join(f"{r.get('mismatch_kl', float('nan')):.1e}" for r in rows)],
    }


def run_trl(model_dir: str, setting: Setting, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from lmgym import load_environment

    env = load_environment(ENV_NAME)
    text_hash = env.rubric.funcs[0]
    dataset = Dataset.from_list([{"prompt": [dict(m) for m in ex.prompt]} for ex in env.dataset])
    tokens_per_call: list[float] = []

    def reward(prompts, completions, completion_ids, **_kwargs) -> list[float]:
        tokens_per_call.append(float(sum(len(ids) for ids in completion_ids)))
        return [text_hash(completion) for completion in completions]

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    with tempfile.TemporaryDirectory() as output_dir:
        args = GRPOConfig(
            output_dir=output_dir, use_cpu=setting.device == "cpu", bf16=setting.dtype == "bfloat16", fp16=False,
            gradient_checkpointing=False, seed=SEED, data_seed=SEED, max_steps=steps, learning_rate=LR,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            per_device_train_batch_size=setting.rollouts, gradient_accumulation_steps=1, steps_per_generation=1,
            num_generations=setting.group, max_completion_length=setting.max_tokens, temperature=1.0, top_p=1.0,
            top_k=0, beta=0.0, num_iterations=1, epsilon=0.2, loss_type="grpo", scale_rewards="group",
            logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
            dataloader_num_workers=0, dataloader_pin_memory=False,
        )
        timer = step_timer()
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                              processing_class=tokenizer, callbacks=[timer])
        generation_s, _widths = time_generation(trainer)
        trainer.train()
    return {
        "step_s": timer.step_s, "generation_s": generation_s, "completion_tokens": tokens_per_call,
        "peak_gpu_gb": gpu_peak_gb(), "peak_rss_mb": peak_rss_mb(),
        "notes": [f"optimizer {args.optim.value}, generation_batch_size {args.generation_batch_size}, "
                  f"cache_implementation {args.cache_implementation}"],
    }


def run_generation(model_dir: str, setting: Setting, generation: str) -> dict:
    """The in-process sampler alone: the dynamic cache vs `generation` ("auto" read as
    "compiled", which off a GPU is the static cache), greedy, at the setting's precision."""

    from lmgym import load_environment
    from lmgym.train.engines.sampling import Sampler, SamplingParams
    from lmgym.train.models import load_model
    from lmgym.train.precision import Precision
    from lmgym.train.render import prompt_ids

    model, tokenizer = load_model(model_dir)
    model.to(setting.device)
    prompts = [prompt_ids(tokenizer, list(ex.prompt)) for ex in load_environment(ENV_NAME).dataset][: setting.rollouts]
    params = SamplingParams(temperature=0.0, max_tokens=setting.max_tokens)
    autocast = Precision(setting.dtype, setting.device).autocast
    result: dict = {"notes": []}
    for mode in ("dynamic", "compiled" if generation == "auto" else generation):
        sampler = Sampler(model, tokenizer, generation=mode, autocast=autocast, notify=result["notes"].append)
        started = time.perf_counter()
        sampler.generate(prompts, params)  # compiles, when it does
        first = time.perf_counter() - started
        started = time.perf_counter()
        samples = sampler.generate(prompts, params)
        elapsed = time.perf_counter() - started
        result[mode if mode == "dynamic" else "other"] = {
            "first_s": first, "tokens_per_s": sum(len(s.token_ids) for s in samples) / elapsed,
            "tokens": [s.token_ids for s in samples], "logprobs": [s.logprobs for s in samples],
        }
    result["decoder"] = type(sampler.decoder).__name__ + (" compiled" if getattr(sampler.decoder, "compiled", False) else "")
    return result


def child(which: str, args: argparse.Namespace) -> None:
    setting = CPU if args.cpu else GPU
    steps = args.steps or setting.steps
    if which == "lmgym":
        result = run_lmgym(args.model_dir, setting, steps, args.generation)
    elif which == "trl":
        result = run_trl(args.model_dir, setting, steps)
    else:
        result = run_generation(args.model_dir, setting, args.generation)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------- report


def peak_flops(device_name: str) -> float | None:
    return next((flops for name, flops in PEAK_BF16_FLOPS if name in device_name), None)


def measure(result: dict, params: int, prompt_tokens: int, peak: float | None) -> dict:
    later = slice(1, None) if len(result["step_s"]) > 1 else slice(None)
    steps, generation, tokens = result["step_s"][later], result["generation_s"][later], result["completion_tokens"][later]
    trained = [prompt_tokens + c for c in tokens]  # every sample is trained: the reward differs for every text
    step_s = statistics.median(steps)
    return {
        "step_s": step_s,
        "gen_tokens_s": statistics.median(c / g for c, g in zip(tokens, generation)),
        "trained_tokens_s": statistics.median(t / s for t, s in zip(trained, steps)),
        "mfu": statistics.median(8 * params * t / s for t, s in zip(trained, steps)) / peak if peak else None,
        "memory": result["peak_gpu_gb"] if result["peak_gpu_gb"] == result["peak_gpu_gb"] else result["peak_rss_mb"] / 1e3,
    }


def agreement(result: dict) -> tuple[str, float]:
    """Rows whose greedy tokens are identical, and the largest logprob gap on the tokens
    before the first difference of each row."""
    a, b = result["dynamic"], result["other"]
    same, gap = 0, 0.0
    for ta, tb, la, lb in zip(a["tokens"], b["tokens"], a["logprobs"], b["logprobs"]):
        same += ta == tb
        common = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
        gap = max([gap, *(abs(x - y) for x, y in zip(la[:common], lb[:common]))])
    return f"{same}/{len(a['tokens'])}", gap


def run_trainers(shape: str, model_dir: Path, args: argparse.Namespace, steps: int, console) -> dict[str, dict]:
    """The three children for one shape, each {"failed": why} if it failed. Where lmgym's
    compiled generation fails, that child runs again with the static cache (noted), so a
    scarce GPU session still gets a row."""
    runs: dict[str, dict] = {}
    for which in ("trl", "lmgym", "generation"):
        tries = [args.generation] + (["static"] if which != "trl" and args.generation in ("auto", "compiled") else [])
        failures: list[str] = []
        for generation in tries:
            extra = ("--generation", generation, "--model-dir", str(model_dir), *(("--cpu",) if args.cpu else ()))
            try:
                runs[which] = run_child(which, steps, console, script=SCRIPT, cwd=str(model_dir.parent), extra=extra,
                                        timeout=args.child_timeout or None)
            except ChildFailed as failure:
                failures.append(str(failure) + (f" (engine.generation = {generation})" if which != "trl" else ""))
                console.print(f"{shape} {which}: {failures[-1]}", markup=False)
                continue
            runs[which].setdefault("notes", []).extend(f"earlier: {f}" for f in failures)
            break
        else:
            runs[which] = {"failed": "; ".join(failures)}
        for note in runs[which].get("notes", []) + runs[which].get("warnings", [])[:3]:
            console.print(f"{shape} {which}: {note[:300]}", markup=False)
    return runs


def report_shape(shape: str, runs: dict[str, dict], params: int, prompt_tokens: int, peak: float | None,
                 table, generation_table) -> dict:
    """Adds `shape`'s rows to both tables; returns what was measured (for --json)."""
    measured = {which: runs[which] if "failed" in runs[which] else measure(runs[which], params, prompt_tokens, peak)
                for which in ("lmgym", "trl")}
    for which in ("lmgym", "trl"):
        r = measured[which]
        if "failed" in r:
            table.add_row(shape, which, "failed", "", "", "", "")
            continue
        table.add_row(shape, which, f"{r['step_s']:.2f}", f"{r['gen_tokens_s']:,.0f}", f"{r['trained_tokens_s']:,.0f}",
                      f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a", f"{r['memory']:.1f}")
    ours, theirs = measured["lmgym"], measured["trl"]
    if "failed" not in ours and "failed" not in theirs:
        table.add_row(shape, "lmgym ÷ TRL", f"{theirs['step_s'] / ours['step_s']:.2f}× speed",
                      f"{ours['gen_tokens_s'] / theirs['gen_tokens_s']:.2f}×",
                      f"{ours['trained_tokens_s'] / theirs['trained_tokens_s']:.2f}×", "",
                      f"{ours['memory'] / theirs['memory']:.2f}×", end_section=True)
    notes = {which: run.get("notes", []) for which, run in runs.items()}
    g = runs["generation"]
    if "failed" in g:
        generation_table.add_row(shape, "failed", "", "", "", "", "")
        return {"trainers": measured, "generation": g, "notes": notes}
    rows, gap = agreement(g)
    generation_table.add_row(shape, f"{g['dynamic']['tokens_per_s']:,.0f}", f"{g['other']['tokens_per_s']:,.0f} ({g['decoder']})",
                             f"{g['other']['tokens_per_s'] / g['dynamic']['tokens_per_s']:.2f}×",
                             f"{g['dynamic']['first_s']:.1f} / {g['other']['first_s']:.1f}", rows, f"{gap:.1e}")
    return {"trainers": measured, "generation": {
        "decoder": g["decoder"], "identical_rows": rows, "largest_logprob_gap": gap,
        **{f"{mode}_{key}": g[mode][key] for mode in ("dynamic", "other") for key in ("tokens_per_s", "first_s")}},
        "notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per trainer (default 10 on a GPU, 4 on CPU)")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, help="model shapes (default: both on a GPU, 135M on CPU)")
    parser.add_argument("--generation", default="auto", help='lmgym\'s engine.generation (default "auto")')
    parser.add_argument("--base", type=Path, help="a folder with SmolLM2's config.json and tokenizer (default: read from "
                                                  "the embedded GGUF; benchmarks/gpu_bundle.py writes one)")
    parser.add_argument("--json", type=Path, help="also write the measurements here, rewritten after each shape")
    parser.add_argument("--child-timeout", type=float, default=None,
                        help="seconds a trainer's process may take before it is killed and reported failed "
                             "(default 300 on a GPU, none on CPU; 0: none)")
    parser.add_argument("--cpu", action="store_true", help="the small CPU version even when a GPU is there")
    parser.add_argument("--child", choices=("trl", "lmgym", "generation"), help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return

    import torch
    import trl
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoTokenizer

    console = Console(width=150)
    args.cpu = args.cpu or not torch.cuda.is_available()
    setting = CPU if args.cpu else GPU
    steps = args.steps or setting.steps
    if args.child_timeout is None:
        args.child_timeout = 0 if args.cpu else 300
    shapes = args.shapes or (SHAPES[:1] if args.cpu else SHAPES)
    device_name = "CPU" if args.cpu else torch.cuda.get_device_name()
    peak = None if args.cpu else peak_flops(device_name)
    table = Table(title=f"GRPO, {setting.dtype}, {setting.prompts} prompts × {setting.group} completions of {setting.max_tokens} "
                        f"tokens, {steps} steps, on {device_name}: lmgym vs TRL {trl.__version__}")
    for column in ("shape", "trainer", "s/step", "gen. tokens/s", "trained tokens/s", "MFU",
                   "peak GPU GB" if not args.cpu else "peak RSS GB"):
        table.add_column(column, justify="right")
    generation_table = Table(title=f"generation alone, {setting.rollouts} prompts × {setting.max_tokens} tokens, greedy, {setting.dtype}")
    for column in ("shape", "dynamic tokens/s", "static/compiled tokens/s", "speed-up", "first call s",
                   "identical rows", "largest logprob gap"):
        generation_table.add_column(column, justify="right")
    footer = (f"N = weights a token passes through; MFU = 8·N·(prompt + completion tokens) per step ÷ step time ÷ "
              f"{'no known peak' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'}; medians over steps 2..{steps}; "
              f"torch {torch.__version__}, python {sys.version.split()[0]}")
    record: dict = {"device": device_name, "steps": steps, "setting": setting.__dict__, "torch": torch.__version__,
                    "trl": trl.__version__, "shapes": {}}
    with tempfile.TemporaryDirectory() as root:
        base = args.base or smollm2_base(Path(root) / "smollm2")
        width = write_environment(Path(root), AutoTokenizer.from_pretrained(base, local_files_only=True))
        for shape in shapes:
            console.print(f"[bold]{shape}[/]: building random weights...")
            model_dir = Path(root) / shape
            params = build_model(shape, base, model_dir)
            runs = run_trainers(shape, model_dir, args, steps, console)
            record["shapes"][shape] = report_shape(shape, runs, params, width * setting.rollouts, peak, table, generation_table)
            if args.json:
                args.json.write_text(json.dumps(record, indent=1))
            console.print(footer, markup=False)
            console.print(table)
            console.print(generation_table)


if __name__ == "__main__":
    main()
