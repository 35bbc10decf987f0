"""Building a training run from its config: model, environment, engine, orchestrator,
trainer and loop (`lmgym.train.loop` runs it), and the run directory around it.

    RUN_DIR/.lock            held (flock) by the process running the run, rank 0 under torchrun
    RUN_DIR/config.toml      the full config (CLI overrides applied), reloaded by --resume; written
                             once the environment and the model have loaded
    RUN_DIR/metrics.jsonl    one line per step: {"step": N, ...} for RL, {"sft_step": N, ...} for SFT
    RUN_DIR/sft_model/       the policy after the SFT warm start (resume starts from it; when it
                             is missing or unreadable, resume runs the warm start again)
    RUN_DIR/checkpoints/     see lmgym.train.checkpoint
    RUN_DIR/final/           the trained policy, a transformers folder
    RUN_DIR/vllm_base/       with engine.kind = "vllm": the weights the server starts from
    RUN_DIR/adapters|weights the versions published to it; RUN_DIR/vllm.log its log

With `engine.kind = "vllm"` and several ranks, each rank samples from one of the servers
`engine.base_url` lists (rank r from the (r mod count)-th), or from the one rank 0 starts;
rank 0 publishes to every server after each step (`lmgym.train.engines.vllm.engine`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmgym.errors import UsageError
from lmgym.parsers.tool_calls import ToolFormat
from lmgym.registry import load_environment
from lmgym.rundir import RunLock, discard_if_unused
from lmgym.train import checkpoint as ckpt
from lmgym.train.chat_templates import configure_tokenizer, resolve_tool_format
from lmgym.train.config import TrainConfig, dump_config
from lmgym.train.distributed import (
    World,
    device_for,
    from_main,
    gather_to_main,
    setup,
    stop_together,
    teardown,
    world_from_env,
)
from lmgym.train.engines.base import RolloutEngine
from lmgym.train.engines.local import LocalEngine
from lmgym.train.fsdp import require_shardable
from lmgym.train.launch import require_enough_prompts
from lmgym.train.live_audit import LiveAudit, announcer
from lmgym.train.loop import LOG_FILES, TrainingLoop
from lmgym.train.metrics import MetricsSink, NullSink, make_sink
from lmgym.train.models import load_model, save_model
from lmgym.train.orchestrator import AsyncOrchestrator, DataStream, Orchestrator
from lmgym.train.precision import Precision, cpu_precision_notice
from lmgym.train.run_files import CONFIG_FILE, FINAL_MODEL, SFT_LOG_SIZES, SFT_MODEL
from lmgym.train.sft import run_sft, sft_rows
from lmgym.train.sharded_checkpoint import plain_copy
from lmgym.train.template_check import require_tool_support
from lmgym.train.trainer import GRPOTrainer
from lmgym.train.vllm_reachable import server_for_rank, unreachable, unreachable_message

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """"auto" is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def apply_lora(model: Any, lora: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks transformers 5 by the old name: theirs to fix, noise to the user
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, config)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(dump_config(config))


def warm_start(config: TrainConfig, model: Any, tokenizer: Any, env: Any, sink: MetricsSink) -> dict[str, float]:
    rows = sft_rows(config.sft.data, env, config.trainer.seed)
    return run_sft(
        model, tokenizer, rows, lr=config.sft.lr, batch_size=config.sft.batch_size, epochs=config.sft.epochs,
        max_seq_len=config.trainer.max_seq_len, max_steps=config.sft.max_steps, seed=config.trainer.seed,
        sink=sink, source=config.sft.data or f"{config.env.name} sft_examples", tools=env.tools,
    )


def save_policy(model: Any, tokenizer: Any, path: Path, log_sizes: dict[str, int] | None = None) -> Path:
    """A model folder of the run, written whole or not at all (see `ckpt.write_dir_atomically`)."""
    def write(tmp: Path) -> None:
        save_model(model, tokenizer, tmp)
        if log_sizes is not None:
            (tmp / SFT_LOG_SIZES).write_text(json.dumps(log_sizes))

    return ckpt.write_dir_atomically(path, write)


def load_sft_model(sft_dir: Path, options: dict[str, Any]) -> tuple[Any, Any, dict[str, int] | None] | None:
    """The run's saved SFT model (loaded with `options`, `ModelConfig.saved_load_options`)
    and the logs' sizes when it was saved; None when there is none or it cannot be read (a
    save killed by an older lmgym left only config.json)."""
    if not sft_dir.exists():
        return None
    try:
        model, tokenizer = load_model(str(sft_dir), **options)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, TypeError, ...
        logger.warning("%s cannot be read (%s); running the SFT warm start again", sft_dir, ckpt.first_line(exc))
        return None
    sizes = sft_dir / SFT_LOG_SIZES
    return model, tokenizer, json.loads(sizes.read_text()) if sizes.exists() else None


def warm_started(config: TrainConfig, model: Any, tokenizer: Any, env: Any, run_dir: Path, sink: MetricsSink, world: World) -> None:
    """The SFT warm start when configured, its result saved to RUN_DIR/sft_model."""
    if config.sft.warm_start:
        warm_start(config, model, tokenizer, env, sink)
        if world.is_main:
            save_policy(model, tokenizer, run_dir / SFT_MODEL, ckpt.log_sizes(run_dir, LOG_FILES))


def resumed_log_sizes(checkpoint: tuple[Path, dict[str, Any]] | None, sft_model: tuple[Any, Any, dict[str, int] | None] | None) -> dict[str, int] | None:
    """The logs' sizes at the point a resume continues from: its checkpoint, else the SFT
    model, else the start (empty logs). None when the point predates recording them."""
    if checkpoint is not None:
        return checkpoint[1].get("logs")
    if sft_model is not None:
        return sft_model[2]
    return dict.fromkeys(LOG_FILES, 0)


def make_orchestrator(
    config: TrainConfig, env: Any, engine: RolloutEngine, data: DataStream, world: World, audit: LiveAudit | None = None
) -> Orchestrator:
    """Synchronous, or asynchronous with bounded staleness when max_off_policy_steps > 0."""
    args = (env, engine, data, config.algorithm, config.sampling, config.trainer.max_seq_len)
    kwargs = {"records_per_step": config.logging.samples_per_step, "world": world, "audit": audit}
    if config.algorithm.max_off_policy_steps == 0:
        return Orchestrator(*args, **kwargs)
    return AsyncOrchestrator(*args, **kwargs, max_off_policy_steps=config.algorithm.max_off_policy_steps)


@dataclass
class LoadedRun:
    """What a run is built from, loaded before anything is written to its directory."""

    world: World
    env: Any
    model: Any
    tokenizer: Any
    tool_format: ToolFormat | None  # how the model's tool calls are read (None: it gets no tools)
    checkpoint: tuple[Path, dict[str, Any]] | None  # the one to resume from
    from_sft_model: bool  # the model is the run's saved SFT warm start
    log_sizes: dict[str, int] | None  # what the logs are cut back to on resume


def load_run(config: TrainConfig, run_dir: Path, *, resume: bool = False) -> LoadedRun:
    """The environment, the policy and (resuming) the checkpoint: everything a bad name or
    a bad file makes fail, loaded first, so a run that cannot start writes nothing."""
    seed_everything(config.trainer.seed)  # the same on every rank: the models start equal
    world = world_from_env()
    require_enough_prompts(config.algorithm.prompts_per_step, world.size)
    env = load_environment(config.env.name, **config.env.args)
    device = device_for(world, resolve_device(config.trainer.device))
    setup(world, device)
    if config.engine.kind == "vllm" and config.engine.servers:
        require_reachable(config.engine.servers, world)
    checkpoint = ckpt.latest_readable_checkpoint(run_dir) if resume else None
    saved = load_sft_model(run_dir / SFT_MODEL, config.model.saved_load_options()) if resume else None
    sizes = resumed_log_sizes(checkpoint, saved) if resume else None
    model, tokenizer = saved[:2] if saved is not None else load_model(config.model.name, **config.model.load_options())
    tool_format = prepare_tokenizer(config, tokenizer, env)
    if config.trainer.strategy == "fsdp" and world.distributed:
        require_shardable(config, model)
    return LoadedRun(world, env, model.to(device), tokenizer, tool_format, checkpoint, saved is not None, sizes)


def prepare_tokenizer(config: TrainConfig, tokenizer: Any, env: Any) -> ToolFormat | None:
    """Apply `model.chat_template`; the model's tool-call format. A tool environment on a
    template that cannot render tools, or whose calls no format reads, fails here, before
    anything is written (`lmgym.train.template_check`)."""
    configure_tokenizer(tokenizer, config.model.chat_template)
    tool_format = resolve_tool_format(tokenizer, config.model.tool_format)
    if env.offers_tools(env.dataset or env.eval_dataset or []):
        require_tool_support(tokenizer, tool_format, config.model.name)
    return tool_format


def build_loop(config: TrainConfig, run_dir: Path, sink: MetricsSink, *, resume: bool = False) -> TrainingLoop:
    """Everything a GRPO run needs, SFT warm start included (or reloaded when resuming)."""
    return assemble_loop(config, run_dir, sink, load_run(config, run_dir, resume=resume))


def assemble_loop(config: TrainConfig, run_dir: Path, sink: MetricsSink, loaded: LoadedRun) -> TrainingLoop:
    """The loop from a loaded run: warm start, engine, orchestrator, trainer, resumed state."""
    world, env, model, tokenizer = loaded.world, loaded.env, loaded.model, loaded.tokenizer
    if world.is_main and loaded.log_sizes is not None:
        ckpt.rewind_logs(run_dir, loaded.log_sizes)  # before anything is logged: what follows is logged again
    if not loaded.from_sft_model:
        warm_started(config, model, tokenizer, env, run_dir, sink, world)
    remote = start_vllm(config, model, tokenizer, run_dir, world, loaded.tool_format) if config.engine.kind == "vllm" else None
    if config.model.lora.enabled:
        model = apply_lora(model, config.model.lora)
    device = next(model.parameters()).device
    engine = remote if remote is not None else LocalEngine(  # ranks sample differently; at the trainer's precision
        model, tokenizer, seed=config.trainer.seed + world.rank, tool_format=loaded.tool_format,
        autocast=Precision(config.model.dtype, device).autocast, generation=config.engine.generation)
    env.use_run_dir(run_dir)
    data = DataStream(env.dataset or env.eval_dataset, seed=config.trainer.seed)
    announce = announcer(world.is_main, config.logging.console_every)
    if world.is_main and (notice := cpu_precision_notice(config.model.dtype, device)):
        announce(notice)
    audit = LiveAudit.for_run(config, env, run_dir, announce=announce, distributed=world.distributed)
    orchestrator = make_orchestrator(config, env, engine, data, world, audit)
    eval_examples = env.get_eval_examples(config.eval.num_examples) if config.eval.every else []
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    trainer = GRPOTrainer(config, model, pad_id, world=world)
    loop = TrainingLoop(config, trainer, tokenizer, orchestrator, run_dir, sink, eval_examples, world=world, audit=audit)
    if loaded.checkpoint is not None:
        loop.resume(*loaded.checkpoint)
    return loop


def start_vllm(config: TrainConfig, model: Any, tokenizer: Any, run_dir: Path, world: World, tool_format: ToolFormat | None) -> RolloutEngine:
    """This rank's vLLM engine: on one of the running servers `engine.base_url` lists
    (started on the weights training starts from), or on one that rank 0 starts on them
    (saved to RUN_DIR/vllm_base) and the other ranks share. Rank 0 publishes to all."""
    from lmgym.train.engines.vllm import VLLMEngine  # talks HTTP only; vLLM lives in its own venv

    engine = config.engine
    server = launch_on_main(config, model, tokenizer, run_dir, world) if not engine.servers else None
    servers = engine.servers or [from_main(server.url if server is not None else None, world)]
    if not engine.servers and world.distributed:
        require_reachable(servers, world)  # on other nodes, rank 0's 127.0.0.1 is not its server
    return VLLMEngine(
        server_for_rank(servers, world.rank), tokenizer, run_dir, keep_versions=engine.keep_versions, tool_format=tool_format,
        server=server, servers=servers if world.is_main else [], world=world,
    )


def launch_on_main(config: TrainConfig, model: Any, tokenizer: Any, run_dir: Path, world: World) -> Any:
    """On rank 0, a vLLM server started on `model` (None on the other ranks); a failure to
    start stops every rank, rank 0 reporting it."""
    from lmgym.train.engines.vllm import VLLMServer

    engine, server, error = config.engine, None, None
    if world.is_main:
        try:
            base = save_policy(model, tokenizer, run_dir / "vllm_base")
            server = VLLMServer(
                base, python=engine.python, dtype=engine.dtype, max_model_len=engine.max_model_len, kv_cache_gb=engine.kv_cache_gb,
                seed=config.trainer.seed, log_path=run_dir / "vllm.log", max_lora_rank=max(16, config.model.lora.r),
            ).start()
        except Exception as exc:  # noqa: BLE001 - whatever it is, the other ranks must not wait for a URL
            error = exc
    stop_together(error, world)
    return server


def require_reachable(servers: list[str], world: World) -> None:
    """Every rank reaches the server it will sample from, or none starts: one message
    (from rank 0) naming each server that did not answer and the ranks it failed for."""
    mine = server_for_rank(servers, world.rank)
    checks = gather_to_main((world.rank, mine, unreachable(mine)), world)
    message = unreachable_message(checks) if checks is not None else None
    stop_together(UsageError(message) if message else None, world)


def train(
    config: TrainConfig, run_dir: Path, *, resume: bool = False, sink: MetricsSink | None = None, created_here: bool = False
) -> dict[str, float]:
    """Run GRPO to `max_steps`, then save the policy to RUN_DIR/final. The run directory is
    locked for the whole run (by rank 0 under torchrun): a second process, a second
    `--resume` included, is refused with RunLockedError. The environment and the model are
    loaded before config.toml is written, so a run that cannot start (a bad name) writes
    nothing, and its directory, when `created_here`, is removed again."""
    world = world_from_env()
    with contextlib.ExitStack() as stack:
        if world.is_main:
            stack.enter_context(RunLock(run_dir))
            stack.enter_context(discard_if_unused(run_dir, created_here))
        stack.callback(teardown, world)
        loaded = load_run(config, run_dir, resume=resume)
        if world.is_main:
            write_config(run_dir, config)
        sink = sink or (run_sink(config, run_dir) if world.is_main else NullSink())
        stack.callback(sink.close)
        loop = assemble_loop(config, run_dir, sink, loaded)
        metrics = loop.run()
        policy = plain_copy(loop.model) if loop.trainer.sharded else loop.model  # FSDP: gathered by every rank to rank 0
        if world.is_main:
            policy = policy.merge_and_unload() if config.model.lora.enabled else policy
            save_policy(policy, loop.tokenizer, run_dir / FINAL_MODEL)
        return metrics


def sft(config: TrainConfig, run_dir: Path, sink: MetricsSink | None = None, *, created_here: bool = False) -> dict[str, float]:
    """Supervised fine-tuning only, holding the run directory's lock; the model is saved to
    RUN_DIR/final. As `train`, it loads before it writes anything."""
    with RunLock(run_dir), discard_if_unused(run_dir, created_here), contextlib.ExitStack() as stack:
        seed_everything(config.trainer.seed)
        env = load_environment(config.env.name, **config.env.args)
        model, tokenizer = load_model(config.model.name, **config.model.load_options())
        prepare_tokenizer(config, tokenizer, env)
        model.to(resolve_device(config.trainer.device))
        write_config(run_dir, config)
        sink = sink or run_sink(config, run_dir)
        stack.callback(sink.close)
        metrics = warm_start(config, model, tokenizer, env, sink)
        save_policy(model, tokenizer, run_dir / FINAL_MODEL)
        return metrics


def run_sink(config: TrainConfig, run_dir: Path) -> MetricsSink:
    """The sinks `[logging]` asks for (rank 0's)."""
    return make_sink(config.logging, run_dir, config.model_dump(), eval_temperature=config.eval.temperature)
