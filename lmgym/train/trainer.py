"""One GRPO optimiser step: `GRPOTrainer.step(batch) -> metrics`, on one CPU or GPU (or one rank).

The trainer holds the policy, AdamW, the LR schedule and the loss (`lmgym.train.losses`,
picked by name once); it knows nothing of orchestrators, evaluation or checkpoints
(`lmgym.train.loop` wires those). A step computes the loss over micro-batches with
gradient accumulation, sums the gradient over ranks, clips it and steps AdamW. Under
`trainer.strategy = "fsdp"` the weights, gradients and AdamW state are sharded over the
ranks instead (`lmgym.train.fsdp`): the same update, in lockstep passes.
`num_iterations` (GRPO's μ) > 1 reuses the batch with stored old logprobs.

Micro-batches are weighted by their share of the loss's averaging units (completions or
tokens, `losses.batch_units`), so accumulation gives the gradient of the whole
batch's loss. Two savings leave that gradient unchanged: logits are computed only from
the first trained position on (`lmgym.train.tokens` knows the layout), and samples with a
zero advantage (no KL term) skip the forward and backward passes, since every loss term
is proportional to the advantage. dr_grpo's T is a constant of the run (`loss_options`),
so neither saving, nor padding, nor the split into micro-batches or ranks changes it. A
NaN loss raises `NonFiniteLoss`.

Batches sampled by older weights (asynchronous generation) or by another sampler are
corrected token by token with importance weights pi_old / mu
(`algorithm.importance_sampling`: tis or mis, `lmgym.train.importance`).

Forward passes compute in `model.dtype` under autocast, with float32 weights, AdamW state
and logprobs (`lmgym.train.precision`); logprobs come a chunk of positions at a time
(`lmgym.train.logprobs`); `trainer.gradient_checkpointing` recomputes activations in the
backward pass. On a GPU each step reports `peak_memory_gb`, the most memory allocated so far.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

import torch

from lmgym.errors import TrainingError
from lmgym.train.batch import Batch
from lmgym.train.checkpoint import load_trainable, trainable_state
from lmgym.train.config import TrainConfig
from lmgym.train.distributed import World, max_over_ranks, sum_gradients, sum_over_ranks
from lmgym.train.fsdp import clip_grad_norm, filler_backward, full_weights, shard_model
from lmgym.train.importance import IS_CORRECTIONS, mismatch_kl
from lmgym.train.losses import LOSSES, batch_units
from lmgym.train.models import use_attn_implementation
from lmgym.train.precision import Precision, checkpointed, enable_gradient_checkpointing
from lmgym.train.sharded_checkpoint import load_sharded
from lmgym.train.tokens import token_logprobs, trained_tensors

__all__ = ["GRPOTrainer", "NonFiniteLoss", "TrainingError", "loss_options", "lr_factor", "token_logprobs"]


class NonFiniteLoss(TrainingError):
    """The loss is NaN or infinite; the loop adds the step and the last checkpoint."""


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


def informative(advantages: torch.Tensor, beta: float) -> torch.Tensor:
    """Indices (B',) of samples whose gradient can be non-zero. Every loss term is proportional
    to the advantage, so with no KL term a zero-advantage sample (e.g. a group whose
    rewards are all equal) contributes exactly nothing and needs no forward/backward."""
    if beta > 0:
        return torch.arange(len(advantages), device=advantages.device)
    return (advantages != 0.0).nonzero().squeeze(1)


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak LR at optimiser step `step` (0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    shapes = {"constant": 1.0, "linear": 1.0 - progress, "cosine": 0.5 * (1 + math.cos(math.pi * progress))}
    return max(0.0, shapes[schedule])



class GRPOTrainer:
    """The policy, its optimiser and schedule, and the loss: `step(batch)` trains on one
    batch; `state_dict()` is what a checkpoint needs to continue exactly."""

    def __init__(self, config: TrainConfig, model: Any, pad_id: int, world: World = World()):
        self.config, self.model, self.pad_id, self.world = config, model, pad_id, world
        self.loss_name = config.algorithm.loss
        self.loss_fn = LOSSES[self.loss_name]
        self.loss_kwargs = loss_options(config)
        trainer = config.trainer
        use_attn_implementation(model, config.model.attn_implementation)
        if trainer.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.device = next(model.parameters()).device
        self.precision = Precision(config.model.dtype, self.device)
        self.reference = self._reference_model() if config.algorithm.beta > 0 else None
        self.sharded = trainer.strategy == "fsdp" and world.distributed  # one process: nothing to shard
        if self.sharded:  # before the optimiser: AdamW's state is made for the shards
            for module in (model, self.reference):
                if module is not None:
                    shard_model(module)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=trainer.lr, weight_decay=trainer.weight_decay,
            fused=True,  # one kernel per step: several times faster than the loop on a CPU
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, trainer.warmup_steps, trainer.max_steps, trainer.lr_schedule)
        )
        self.correction = IS_CORRECTIONS.get(config.algorithm.importance_sampling)

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
        with torch.no_grad(), self.precision.autocast():
            if self.reference is not None:
                return token_logprobs(self.reference, ids, attention, temperature, start)
            with self.model.disable_adapter():
                return token_logprobs(self.model, ids, attention, temperature, start)

    def _old_logprobs(self, ids, attention, start: int) -> torch.Tensor:
        micro = self.config.trainer.micro_batch_size
        with torch.no_grad(), self.precision.autocast():
            return torch.cat([
                token_logprobs(self.model, ids[s : s + micro], attention[s : s + micro], self.config.sampling.temperature, start)
                for s in range(0, ids.shape[0], micro)
            ])

    def full_weights(self) -> Any:
        """Under FSDP, the full weights on every rank for passes without gradients
        (sampling, evaluation); every rank must enter. Nothing to do otherwise."""
        return full_weights(self.model, self.reference) if self.sharded else contextlib.nullcontext()

    def step(self, batch: Batch) -> dict[str, float]:
        """One optimiser step (`num_iterations` of them over the same batch) on `batch`,
        this rank's share of the step's samples. Returns the step's training statistics."""
        algorithm, world = self.config.algorithm, self.world
        if sum_over_ranks(len(batch.samples), world) == 0:
            self.scheduler.step()
            return {"skipped": 1.0}
        temperature, iterations, beta = self.config.sampling.temperature, algorithm.num_iterations, algorithm.beta
        keep = informative(batch.advantages, beta)
        metrics = {"samples_skipped_zero_advantage": float(len(batch.samples) - len(keep))}
        with self.full_weights() if beta > 0 or iterations > 1 else contextlib.nullcontext():
            if batch.samples:  # a rank may get no samples while the others train
                device = self.device
                whole = trained_tensors(batch.samples, self.pad_id, device)
                # Micro-batches are weighed against the whole batch's units (dropped samples
                # included, every rank's), so the gradient equals that of the loss over every sample.
                rows = keep.to(device)
                kept = whole.rows(rows)
                ids, attention, mask, sampler, start = kept.input_ids, kept.attention_mask, kept.loss_mask, kept.sampler_logprobs, kept.start
                advantages = batch.advantages.to(device)[rows]  # (B',)
                reference = self._reference_logprobs(ids, attention, start) if beta > 0 else None  # beta > 0 keeps all
                old = self._old_logprobs(ids, attention, start) if iterations > 1 and len(keep) else None
        total_units = sum_over_ranks(batch_units(self.loss_name, whole.loss_mask) if batch.samples else 0.0, world)
        micro = self.config.trainer.micro_batch_size
        parts: list[tuple[float, dict[str, float]]] = []  # (weight, stats) per micro-batch and iteration
        rounds = -(-len(keep) // micro)
        if self.sharded:  # every pass is a collective: ranks with fewer micro-batches fill in
            rounds = max_over_ranks(rounds, world)
        for _ in range(iterations):
            self.optimizer.zero_grad(set_to_none=True)
            for first in range(0, rounds * micro, micro):
                part = slice(first, first + micro)
                weight = batch_units(self.loss_name, mask[part]) / total_units if first < len(keep) and total_units else 0.0
                if weight == 0:
                    if self.sharded:
                        filler_backward(self.model, self.device, self.precision.autocast)
                    continue
                with self.precision.autocast(), checkpointed(self.model, self.config.trainer.gradient_checkpointing):
                    logprobs = token_logprobs(self.model, ids[part], attention[part], temperature, start)
                proximal = old[part] if old is not None else logprobs.detach()  # pi_old: the weights before this step
                corrected = self.correction(proximal, sampler[part], mask[part], algorithm.is_cap) if self.correction else None
                out = self.loss_fn(
                    logprobs, proximal, advantages[part], mask[part],
                    ref_logprobs=reference[part] if reference is not None else None, beta=beta,
                    is_weights=corrected.weights if corrected is not None else None, **self.loss_kwargs,
                )
                if not torch.isfinite(out.loss):
                    raise NonFiniteLoss(f"the loss is {out.loss.item()}")
                self.precision.backward(out.loss * weight)
                parts.append((weight, micro_stats(out, logprobs.detach(), proximal, sampler[part], mask[part], corrected, beta > 0)))
            for p in self.trainable:  # a zero gradient is still a step (Adam's momentum moves)
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            if not self.sharded:  # FSDP summed them already, reduce-scattered in each backward
                sum_gradients(self.trainable, world)  # an overflow on any rank is in every rank's sum
            self.precision.unscale(self.optimizer)
            # only what is trained: frozen weights (LoRA's base) must not weigh in the clip
            grad_norm = clip_grad_norm(self.trainable, self.config.trainer.max_grad_norm)
            self.precision.step(self.optimizer)
        self.scheduler.step()
        metrics.update(combine_stats(parts, iterations), grad_norm=float(grad_norm), lr=self.scheduler.get_last_lr()[0])
        if self.device.type == "cuda":
            metrics["peak_memory_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
        return metrics

    def state_dict(self) -> dict[str, Any]:
        """The trained weights (all, or the LoRA adapter), the optimiser and the schedule."""
        if self.sharded:  # the weights and AdamW's state go to DCP shards (`lmgym.train.sharded_checkpoint`)
            state = {"weights": {}, "optimizer": {}, "scheduler": self.scheduler.state_dict()}
        else:
            state = {"weights": trainable_state(self.model), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.precision.scaler is not None:
            state["loss_scale"] = self.precision.state_dict()  # float16's GradScaler
        return state

    def load_state_dict(self, state: dict[str, Any], checkpoint: Any = None) -> None:
        """Continue from what `state_dict` returned (a checkpoint's state.pt holds it); under
        FSDP the weights and AdamW's state come from `checkpoint`'s shards."""
        if bool(state.get("sharded")) != self.sharded:
            raise ValueError(f"it was saved {'with' if state.get('sharded') else 'without'} trainer.strategy = \"fsdp\" over several processes; resume it the same way")
        if self.sharded:
            load_sharded(checkpoint, self.model, self.optimizer)
        else:
            load_trainable(self.model, state["weights"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state.get("loss_scale", {}))
