"""Wiring a training run from its config: model, environment, engine, trainer, run dir.

    RUN_DIR/config.toml      the full config (CLI overrides applied), reloaded by --resume
    RUN_DIR/metrics.jsonl    one line per step
    RUN_DIR/sft_model/       the policy after the SFT warm start (resume starts from it)
    RUN_DIR/checkpoints/     see lmgym.train.checkpoint
    RUN_DIR/final/           the trained policy, a transformers folder
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from lmgym.clients.local import LocalClient
from lmgym.errors import UsageError
from lmgym.registry import load_environment
from lmgym.rundir import new_run_dir
from lmgym.train import checkpoint as ckpt
from lmgym.train.config import TrainConfig, dump_config
from lmgym.train.engine import LocalEngine
from lmgym.train.distributed import World, device_for, setup, teardown, world_from_env
from lmgym.train.metrics import MetricsSink, NullSink, make_sink
from lmgym.train.models import load_model, save_model
from lmgym.train.orchestrator import AsyncOrchestrator, DataStream, Orchestrator
from lmgym.train.sft import run_sft, sft_rows
from lmgym.train.trainer import GRPOTrainer, apply_lora

CONFIG_FILE = "config.toml"
SFT_MODEL = "sft_model"
FINAL_MODEL = "final"


def default_run_dir(config: TrainConfig, kind: str) -> Path:
    if config.logging.output_dir:
        return Path(config.logging.output_dir)
    return new_run_dir(kind, config.env.name, Path(config.model.name).name)


def resolve_device(name: str) -> torch.device:
    """"auto" is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(dump_config(config))


def warm_start(config: TrainConfig, model: Any, tokenizer: Any, env: Any, sink: MetricsSink) -> dict[str, float]:
    rows = sft_rows(config.sft.data, env, config.trainer.seed)
    return run_sft(
        model, tokenizer, rows, lr=config.sft.lr, batch_size=config.sft.batch_size, epochs=config.sft.epochs,
        max_seq_len=config.trainer.max_seq_len, max_steps=config.sft.max_steps, seed=config.trainer.seed,
        sink=sink, source=config.sft.data or f"{config.env.name} sft_examples",
    )


def make_orchestrator(config: TrainConfig, env: Any, client: LocalClient, data: DataStream, world: World) -> Orchestrator:
    """Synchronous, or asynchronous with bounded staleness when max_off_policy_steps > 0."""
    args = (env, client, data, config.algorithm, config.sampling, config.trainer.max_seq_len)
    kwargs = {"records_per_step": config.logging.samples_per_step, "world": world}
    if config.algorithm.max_off_policy_steps == 0:
        return Orchestrator(*args, **kwargs)
    return AsyncOrchestrator(*args, **kwargs, max_off_policy_steps=config.algorithm.max_off_policy_steps)


def build_trainer(config: TrainConfig, run_dir: Path, sink: MetricsSink, *, resume: bool = False) -> GRPOTrainer:
    """Everything a GRPO run needs, SFT warm start included (or reloaded when resuming)."""
    seed_everything(config.trainer.seed)  # the same on every rank: the models start equal
    world = world_from_env()
    if config.algorithm.prompts_per_step % world.size:
        raise UsageError(f"algorithm.prompts_per_step = {config.algorithm.prompts_per_step} must be divisible by the {world.size} processes")
    env = load_environment(config.env.name, **config.env.args)
    sft_dir = run_dir / SFT_MODEL
    device = device_for(world, resolve_device(config.trainer.device))
    setup(world, device)
    if resume and sft_dir.exists():
        model, tokenizer = load_model(str(sft_dir))
        model.to(device)
    else:
        model, tokenizer = load_model(config.model.name)
        model.to(device)
        if config.sft.warm_start:
            warm_start(config, model, tokenizer, env, sink)
            if world.is_main:
                save_model(model, tokenizer, sft_dir)
    if config.model.lora.enabled:
        model = apply_lora(model, config.model.lora)
    engine = LocalEngine(model, tokenizer, seed=config.trainer.seed + world.rank)  # ranks sample different completions
    env.use_run_dir(run_dir)
    data = DataStream(env.dataset or env.eval_dataset, seed=config.trainer.seed)
    orchestrator = make_orchestrator(config, env, LocalClient(engine), data, world)
    eval_examples = env.get_eval_examples(config.eval.num_examples) if config.eval.every else []
    trainer = GRPOTrainer(config, model, tokenizer, orchestrator, run_dir, sink, eval_examples, world=world)
    if resume:
        checkpoint = ckpt.latest_checkpoint(run_dir)
        if checkpoint is not None:
            trainer.resume(checkpoint)
    return trainer


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, sink: MetricsSink | None = None) -> dict[str, float]:
    """Run GRPO to `max_steps`, then save the policy to RUN_DIR/final."""
    world = world_from_env()
    if world.is_main:
        write_config(run_dir, config)
    sink = sink or (make_sink(config.logging, run_dir, config.model_dump()) if world.is_main else NullSink())
    try:
        trainer = build_trainer(config, run_dir, sink, resume=resume)
        metrics = trainer.train()
        if world.is_main:
            policy = trainer.model.merge_and_unload() if config.model.lora.enabled else trainer.model
            save_model(policy, trainer.tokenizer, run_dir / FINAL_MODEL)
        return metrics
    finally:
        sink.close()
        teardown(world)


def sft(config: TrainConfig, run_dir: Path, sink: MetricsSink | None = None) -> dict[str, float]:
    """Supervised fine-tuning only; the model is saved to RUN_DIR/final."""
    write_config(run_dir, config)
    sink = sink or make_sink(config.logging, run_dir, config.model_dump())
    try:
        seed_everything(config.trainer.seed)
        env = load_environment(config.env.name, **config.env.args)
        model, tokenizer = load_model(config.model.name)
        model.to(resolve_device(config.trainer.device))
        metrics = warm_start(config, model, tokenizer, env, sink)
        save_model(model, tokenizer, run_dir / FINAL_MODEL)
        return metrics
    finally:
        sink.close()
