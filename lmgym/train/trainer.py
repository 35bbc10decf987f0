"""The GRPO trainer for one machine (one CPU or one GPU): no second device needed.

Each step: the orchestrator samples a batch of groups with the current weights (through
the in-process engine, which shares the weights, so publishing them is free, or a vLLM
server, `engine.kind = "vllm"`, which gets them after every step), then the
trainer computes the chosen loss (`lmgym.train.losses`, picked by name once) over
micro-batches with gradient accumulation, clips the gradient and steps AdamW.
`num_iterations` (GRPO's μ) > 1 reuses the batch with stored old logprobs.

Micro-batches are weighted by their share of the loss's averaging units (completions or
tokens, `losses.batch_units`), so accumulation gives the gradient of the whole
batch's loss. Two savings leave that gradient unchanged: logits are computed only from
the first trained position on, and samples with a zero advantage (no KL term) skip the
forward and backward passes, since every loss term is proportional to the advantage.
dr_grpo's T is a constant of the run (`loss_options`), so neither saving, nor padding,
nor the split into micro-batches or ranks changes it. A NaN loss stops the run, naming
the step and the last checkpoint.

Batches sampled by older weights (asynchronous generation, `algorithm.max_off_policy_steps`)
or by another sampler are corrected token by token with importance weights pi_old / mu
(`algorithm.importance_sampling`: tis or mis, `lmgym.train.importance`); a batch older
than the bound is dropped and counted. After each step the new weights are published to
the orchestrator. A few rollouts per step go to RUN_DIR/samples.jsonl (`logging.samples_per_step`).
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import orjson
import torch

from lmgym.errors import TrainingError
from lmgym.train import checkpoint as ckpt
from lmgym.train.config import TrainConfig
from lmgym.train.distributed import World, mean_metrics, sum_gradients, sum_over_ranks
from lmgym.train.importance import IS_CORRECTIONS, mismatch_kl
from lmgym.train.losses import LOSSES, batch_units
from lmgym.train.metrics import METRICS_FILE, MetricsSink, NullSink
from lmgym.train.orchestrator import Batch, Orchestrator
from lmgym.train.tokens import pad_batch

logger = logging.getLogger(__name__)
SAMPLES_FILE = "samples.jsonl"
LOG_FILES = (METRICS_FILE, SAMPLES_FILE)  # cut back to a checkpoint's step on resume


def token_logprobs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float, start: int = 0) -> torch.Tensor:
    """Logprob of each next token under logits / temperature, as the sampler drew it:
    (B, T-1-start), for the tokens at positions start+1 .. T-1.

    Logits are computed only from position `start` on (`logits_to_keep`): over the
    prompt they would be thrown away, and the vocabulary projection is the largest
    matmul of a small model."""
    width = input_ids.shape[1]
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=width - start).logits
    logits = logits[:, :-1].float()  # (B, T-1-start, V)
    if temperature > 0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, start + 1 :, None]).squeeze(-1)


def loss_options(config: TrainConfig) -> dict[str, Any]:
    """The chosen loss's settings from the config: the clip range when set (the loss's
    own default otherwise), cispo's absolute cap, and dr_grpo's constant T."""
    algorithm = config.algorithm
    if algorithm.loss == "cispo":
        return {"cap": algorithm.cispo_cap}
    options = {k: v for k, v in {"eps_low": algorithm.eps_low, "eps_high": algorithm.eps_high}.items() if v is not None}
    if algorithm.loss == "dr_grpo":
        options["length"] = algorithm.dr_grpo_length or config.sampling.max_tokens
    return options


def micro_stats(out: Any, logprobs: torch.Tensor, proximal: torch.Tensor, sampler: torch.Tensor, mask: torch.Tensor, corrected: Any, with_kl: bool = True) -> dict[str, float]:
    """What one micro-batch reports: the loss's own stats and how far the sampler was.
    `kl` only when there is a reference (beta > 0): without one it is no measurement."""
    with torch.no_grad():
        gap = ((logprobs - sampler).abs() * mask).sum() / mask.sum().clamp(min=1)
        stats = {
            "loss": out.loss.item(), "clip_fraction": out.clip_fraction, "ratio_mean": out.ratio_mean,
            "sampler_mismatch": float(gap), "mismatch_kl": mismatch_kl(proximal, sampler, mask),
        }
    if with_kl:
        stats["kl"] = out.kl
    if corrected is not None:
        stats.update(is_capped_fraction=corrected.capped_fraction, is_weight_mean=corrected.weight_mean)
    return stats


def combine_stats(parts: list[tuple[float, dict[str, float]]], iterations: int) -> dict[str, float]:
    """The batch's loss (micro-batch losses weighted by their share of the batch, as the
    gradient is) and the mean of every other stat over the micro-batches that ran."""
    if not parts:
        return {"loss": 0.0}
    covered = sum(weight for weight, _ in parts)
    combined = {key: sum(w * stats[key] for w, stats in parts) / covered for key in parts[0][1]}
    combined["loss"] = sum(w * stats["loss"] for w, stats in parts) / iterations
    return combined


def write_samples(run_dir: Path, step: int, records: list[dict[str, Any]]) -> None:
    """Append a step's sampled rollouts to RUN_DIR/samples.jsonl (read by `lmgym view`)."""
    if records:
        with (run_dir / SAMPLES_FILE).open("ab") as file:
            file.write(b"".join(orjson.dumps({**record, "step": step}, default=str) + b"\n" for record in records))


def first_trained_position(mask: torch.Tensor) -> int:
    """The first column of a (B, T) loss mask where any row trains (0 if none)."""
    columns = mask.any(dim=0).nonzero()
    return int(columns[0]) if len(columns) else 0


def informative(advantages: list[float], beta: float) -> list[int]:
    """Indices of samples whose gradient can be non-zero. Every loss term is proportional
    to the advantage, so with no KL term a zero-advantage sample (e.g. a group whose
    rewards are all equal) contributes exactly nothing and needs no forward/backward."""
    return [i for i, a in enumerate(advantages) if beta > 0 or a != 0.0]


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak LR at optimiser step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    shapes = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}
    return max(0.0, shapes[schedule])


def apply_lora(model: Any, lora: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft asks transformers 5 by the old name: theirs to fix, noise to the user
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, config)


class GRPOTrainer:
    def __init__(self, config: TrainConfig, model: Any, tokenizer: Any, orchestrator: Orchestrator, run_dir: Path, sink: MetricsSink | None = None, eval_examples=None, world: World = World()):
        self.config, self.model, self.tokenizer, self.world = config, model, tokenizer, world
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.orchestrator, self.run_dir = orchestrator, run_dir
        self.sink = sink or NullSink()
        self.eval_examples = eval_examples or []
        self.loss_name = config.algorithm.loss
        self.loss_fn = LOSSES[self.loss_name]
        self.loss_kwargs = loss_options(config)
        trainer = config.trainer
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=trainer.lr, weight_decay=trainer.weight_decay,
            fused=True,  # one kernel per step: several times faster than the loop on a CPU
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, trainer.warmup_steps, trainer.max_steps, trainer.lr_schedule)
        )
        self.reference = self._reference_model() if config.algorithm.beta > 0 else None
        self.correction = IS_CORRECTIONS.get(config.algorithm.importance_sampling)
        self.step = 0
        self.data_position = orchestrator.data.position
        self.last_checkpoint: Path | None = None

    def _reference_model(self) -> Any:
        """With LoRA the reference is the base with the adapter disabled; else a frozen copy."""
        if self.config.model.lora.enabled:
            return None
        reference = copy.deepcopy(self.model).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        return reference

    def _reference_logprobs(self, ids, attention, start: int) -> torch.Tensor:
        temperature = self.config.sampling.temperature
        with torch.no_grad():
            if self.reference is not None:
                return token_logprobs(self.reference, ids, attention, temperature, start)
            with self.model.disable_adapter():
                return token_logprobs(self.model, ids, attention, temperature, start)

    # -- one step ------------------------------------------------------------------------
    def train_step(self, batch: Batch) -> dict[str, float]:
        metrics = dict(batch.metrics)
        if sum_over_ranks(len(batch.samples), self.world) == 0:
            metrics["skipped"] = 1.0
            self.scheduler.step()
            return metrics
        temperature, iterations = self.config.sampling.temperature, self.config.algorithm.num_iterations
        keep = informative(batch.advantages, self.config.algorithm.beta)
        metrics["samples_skipped_zero_advantage"] = float(len(batch.samples) - len(keep))
        if batch.samples:  # a rank may get no samples while the others train
            device = next(self.model.parameters()).device
            tensors = pad_batch(batch.samples, self.pad_id, device)
            full_mask = tensors["loss_mask"][:, 1:]  # (B, T-1): 1 where token t+1 was sampled
            start = first_trained_position(full_mask)
            # Micro-batches are weighed against the whole batch's units (dropped samples
            # included, every rank's), so the gradient equals that of the loss over every sample.
            batch_mask = full_mask[:, start:]
            rows = torch.tensor(keep, dtype=torch.long, device=device)
            ids, attention = tensors["input_ids"][rows], tensors["attention_mask"][rows]
            mask, sampler = batch_mask[rows], tensors["sampler_logprobs"][rows, start + 1 :]
            advantages = torch.tensor(batch.advantages, dtype=torch.float32, device=device)[rows]  # (B,)
            reference = self._reference_logprobs(ids, attention, start) if self.config.algorithm.beta > 0 else None  # beta > 0 keeps all
            old = self._old_logprobs(ids, attention, start) if iterations > 1 and keep else None
        total_units = sum_over_ranks(batch_units(self.loss_name, batch_mask) if batch.samples else 0.0, self.world)
        micro = self.config.trainer.micro_batch_size
        parts: list[tuple[float, dict[str, float]]] = []  # (weight, stats) per micro-batch and iteration
        for _ in range(iterations):
            self.optimizer.zero_grad(set_to_none=True)
            for first in range(0, len(keep), micro):
                part = slice(first, first + micro)
                weight = batch_units(self.loss_name, mask[part]) / total_units if total_units else 0.0
                if weight == 0:
                    continue
                logprobs = token_logprobs(self.model, ids[part], attention[part], temperature, start)
                proximal = old[part] if old is not None else logprobs.detach()  # pi_old: the weights before this step
                corrected = self.correction(proximal, sampler[part], mask[part], self.config.algorithm.is_cap) if self.correction else None
                out = self.loss_fn(
                    logprobs, proximal, advantages[part], mask[part],
                    ref_logprobs=reference[part] if reference is not None else None, beta=self.config.algorithm.beta,
                    is_weights=corrected.weights if corrected is not None else None, **self.loss_kwargs,
                )
                if not torch.isfinite(out.loss):
                    where = self.last_checkpoint or "none saved yet"
                    raise TrainingError(f"the loss is {out.loss.item()} at step {self.step + 1}; last checkpoint: {where}")
                (out.loss * weight).backward()
                parts.append((weight, micro_stats(out, logprobs.detach(), proximal, sampler[part], mask[part], corrected, self.config.algorithm.beta > 0)))
            for p in self.trainable:  # a zero gradient is still a step (Adam's momentum moves)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            sum_gradients(self.trainable, self.world)
            # only what is trained: frozen weights (LoRA's base) must not weigh in the clip
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, self.config.trainer.max_grad_norm)
            self.optimizer.step()
        self.scheduler.step()
        stats = {**combine_stats(parts, iterations), "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0]}
        for clash in stats.keys() & metrics.keys():  # a rubric metric named like the trainer's (`loss`) keeps its value
            metrics[f"rubric/{clash}"] = metrics.pop(clash)
        metrics.update(stats)
        return metrics

    def _old_logprobs(self, ids, attention, start: int) -> torch.Tensor:
        micro = self.config.trainer.micro_batch_size
        with torch.no_grad():
            return torch.cat([
                token_logprobs(self.model, ids[s : s + micro], attention[s : s + micro], self.config.sampling.temperature, start)
                for s in range(0, ids.shape[0], micro)
            ])

    # -- the loop ------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        config = self.config
        last: dict[str, float] = {}
        if self.step == 0 and config.eval.every and self.eval_examples and self.world.is_main:
            self.sink.log(0, self.evaluate())
        try:
            while self.step < config.trainer.max_steps:
                last = self._one_step()
        finally:
            self.orchestrator.close()
        return last

    def _one_step(self) -> dict[str, float]:
        config = self.config
        started = time.perf_counter()
        batch, dropped = self._fresh_batch()
        waited = time.perf_counter() - started
        metrics = self.train_step(batch)
        metrics.update(wait_s=waited, train_s=time.perf_counter() - started - waited)
        metrics = mean_metrics(metrics, self.world)
        self.step += 1
        self.data_position = batch.data_position or self.data_position
        self.orchestrator.publish(self.model, self.step)
        metrics.update(staleness=float(self.step - 1 - batch.policy_version), batches_dropped_stale=float(dropped))
        elapsed = time.perf_counter() - started
        metrics["step_s"] = elapsed
        metrics["tokens_per_s"] = metrics.get("completion_tokens", 0.0) / elapsed
        if not self.world.is_main:  # rank 0 alone evaluates, saves and logs
            return metrics
        if config.eval.every and self.eval_examples and self.step % config.eval.every == 0:
            metrics.update(self.evaluate())
        self.sink.log(self.step, metrics)  # before the checkpoint: a step that has one has its rows
        write_samples(self.run_dir, self.step, batch.records)
        if config.checkpoint.every and self.step % config.checkpoint.every == 0:
            self.save()
        return metrics

    def _fresh_batch(self) -> tuple[Batch, int]:
        """The next batch sampled within `max_off_policy_steps` of the current weights."""
        dropped = 0
        while True:
            batch = self.orchestrator.next_batch(self.step)
            if self.step - batch.policy_version <= self.config.algorithm.max_off_policy_steps:
                return batch, dropped
            dropped += 1
            logger.warning("dropped a batch sampled at version %d for step %d", batch.policy_version, self.step)

    def evaluate(self) -> dict[str, float]:
        return self.orchestrator.evaluate(self.eval_examples, self.config.eval.temperature)

    # -- checkpoints ---------------------------------------------------------------------
    def save(self) -> Path:
        state = {
            "step": self.step,
            "weights": ckpt.trainable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.rng_state(self.orchestrator.engine.rng_state()),
            "data": self.data_position,
            "logs": ckpt.log_sizes(self.run_dir, LOG_FILES),
        }
        self.last_checkpoint = ckpt.save_checkpoint(self.run_dir, self.step, state, self.model, self.tokenizer, self.config.checkpoint.keep)
        return self.last_checkpoint

    def resume(self, checkpoint: Path, state: dict[str, Any]) -> None:
        """Continue from `state`, read from `checkpoint` by `ckpt.load_state`."""
        try:
            ckpt.load_trainable(self.model, state["weights"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.orchestrator.engine.set_rng_state(ckpt.restore_rng(state["rng"]))
            self.orchestrator.data.seek(state["data"])
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:
            raise ckpt.CheckpointError(f"{checkpoint / ckpt.STATE_FILE}: does not fit this run's model and config ({ckpt.first_line(exc)})") from None
        self.data_position = state["data"]
        self.step = state["step"]
        self.last_checkpoint = checkpoint
