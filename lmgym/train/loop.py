"""The run of GRPO: sample → step → publish → evaluate / log / checkpoint, until `max_steps`.

The loop owns the trainer (`GRPOTrainer.step(batch) -> metrics`, which knows nothing of
what is around it) and the orchestrator (synchronous, or asynchronous with bounded
staleness: `lmgym.train.orchestrator`). Each step it takes the next batch sampled within
`algorithm.max_off_policy_steps` of the current weights (older ones are dropped and
counted), trains on it, publishes the new weights to the rollout engine, and on rank 0
evaluates every `eval.every` steps, logs the step's metrics, appends a few rollouts to
RUN_DIR/samples.jsonl (`logging.samples_per_step`) and saves a checkpoint every
`checkpoint.every` steps (`lmgym.train.checkpoint`). Under torchrun every rank runs the
same loop on its share of the prompts; the trainer sums the gradients and the loop
averages the metrics. A NaN loss stops the run, naming the step and the last checkpoint.
With a live audit (`[audit]`, `lmgym.train.live_audit`) each step's and each evaluation's
findings are logged and reported, and a check whose action is stop ends the run after
the step is logged and a checkpoint saved (`AuditStopped`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Sequence

from lmgym.errors import TrainingError
from lmgym.eval.results import dumps_line, open_lines_for_append
from lmgym.train import checkpoint as ckpt
from lmgym.train.batch import Batch
from lmgym.train.config import TrainConfig
from lmgym.train.distributed import World, from_main, gather_to_main, mean_metrics
from lmgym.train.live_audit import AuditStopped, LiveAudit, Onset, stop_message
from lmgym.train.metrics import METRICS_FILE, MetricsSink, NullSink
from lmgym.train.orchestrator import Orchestrator
from lmgym.train.sharded_checkpoint import save_sharded
from lmgym.train.trainer import GRPOTrainer, NonFiniteLoss
from lmgym.types import Example

logger = logging.getLogger(__name__)
SAMPLES_FILE = "samples.jsonl"
LOG_FILES = (METRICS_FILE, SAMPLES_FILE)  # cut back to a checkpoint's step on resume


def write_samples(run_dir: Path, step: int, records: list[dict[str, Any]]) -> None:
    """Append a step's sampled rollouts to RUN_DIR/samples.jsonl (read by `lmgym view`)."""
    if records:
        with open_lines_for_append(run_dir / SAMPLES_FILE) as file:  # never glued onto a line torn by a kill
            file.write(b"".join(dumps_line({**record, "step": step}) for record in records))


def step_metrics(batch_metrics: dict[str, float], trained: dict[str, float]) -> dict[str, float]:
    """The batch's rubric and generation metrics, then the trainer's; a rubric metric named
    like one of the trainer's (`loss`) keeps its value as `rubric/NAME`."""
    metrics = dict(batch_metrics)
    for clash in trained.keys() & metrics.keys():
        metrics[f"rubric/{clash}"] = metrics.pop(clash)
    metrics.update(trained)
    return metrics


class TrainingLoop:
    """A GRPO run from step `step` to `max_steps`; `run()` runs it and closes the orchestrator."""

    def __init__(
        self, config: TrainConfig, trainer: GRPOTrainer, tokenizer: Any, orchestrator: Orchestrator, run_dir: Path,
        sink: MetricsSink | None = None, eval_examples: Sequence[Example] = (), world: World = World(),
        audit: LiveAudit | None = None,
    ):
        """The loop owns `orchestrator` from here on: `run()` closes it. `tokenizer` is
        saved with each checkpoint's model."""
        self.config, self.trainer, self.tokenizer, self.world = config, trainer, tokenizer, world
        self.orchestrator, self.run_dir = orchestrator, run_dir
        self.sink = sink or NullSink()
        self.eval_examples = list(eval_examples)
        self.step = 0  # optimiser steps taken: the policy version of the current weights
        self.data_position = orchestrator.data.position  # after the last trained batch's examples
        self.last_checkpoint: Path | None = None
        self.audit = audit

    @property
    def model(self) -> Any:
        return self.trainer.model

    def run(self) -> dict[str, float]:
        """Train to `trainer.max_steps`; the last step's metrics."""
        config = self.config
        last: dict[str, float] = {}
        if self.step == 0 and config.eval.every and self.eval_examples:
            with self.trainer.full_weights():  # FSDP: every rank gathers, rank 0 evaluates
                metrics = self.evaluate() if self.world.is_main else None
            if metrics is not None:
                stop = self._audit_eval(0, metrics)
                self.sink.log(0, metrics)
                if stop is not None:
                    self._stop(stop)
        try:
            while self.step < config.trainer.max_steps:
                last = self._one_step()
        finally:
            self.orchestrator.close()
        return last

    def train_on(self, batch: Batch) -> dict[str, float]:
        """The trainer's step on `batch`, its metrics after the batch's own; a loss that is
        not finite stops the run, naming the step and the checkpoint to go back to."""
        try:
            trained = self.trainer.step(batch)
        except NonFiniteLoss as exc:
            where = self.last_checkpoint or "none saved yet"
            raise TrainingError(f"{exc} at step {self.step + 1}; last checkpoint: {where}") from None
        return step_metrics(batch.metrics, trained)

    def _one_step(self) -> dict[str, float]:
        config = self.config
        started = time.perf_counter()
        batch, dropped = self._fresh_batch()
        review = self.orchestrator.take_review(batch)
        waited = time.perf_counter() - started
        metrics = self.train_on(batch)
        metrics.update(wait_s=waited, train_s=time.perf_counter() - started - waited)
        metrics = mean_metrics(metrics, self.world)
        self.step += 1
        self.data_position = batch.data_position or self.data_position
        self.orchestrator.publish(self.model, self.step)
        metrics.update(staleness=float(self.step - 1 - batch.policy_version), batches_dropped_stale=float(dropped))
        elapsed = time.perf_counter() - started
        metrics["step_s"] = elapsed
        metrics["tokens_per_s"] = metrics.get("completion_tokens", 0.0) / elapsed
        stop = None
        if config.eval.every and self.eval_examples and self.step % config.eval.every == 0:
            with self.trainer.full_weights():  # FSDP: every rank gathers, rank 0 evaluates
                if self.world.is_main:
                    metrics.update(self.evaluate())
                    stop = self._audit_eval(self.step, metrics)
            stop = from_main(stop, self.world)  # every rank stops together, and checkpoints together
        if self.audit is not None:  # every rank: the metrics are averaged, so all decide alike
            stop = self.audit.after_step(self.step, metrics, review) or stop
        if not self.world.is_main:  # rank 0 alone evaluates and logs; every rank takes part in a checkpoint
            if config.checkpoint.every and self.step % config.checkpoint.every == 0:
                self.save()
            if stop is not None:
                self._stop(stop)
            return metrics
        self.sink.log(self.step, metrics)  # before the checkpoint: a step that has one has its rows
        write_samples(self.run_dir, self.step, batch.records)
        if config.checkpoint.every and self.step % config.checkpoint.every == 0:
            self.save()
        if stop is not None:
            self._stop(stop)
        return metrics

    def _audit_eval(self, step: int, metrics: dict[str, float]) -> Onset | None:
        if self.audit is None:
            return None
        return self.audit.after_eval(step, metrics, self.orchestrator.last_eval_records)

    def _stop(self, onset: Onset) -> None:
        """End the run for the audit: a checkpoint of this step (rank 0), then AuditStopped."""
        if not (self.last_checkpoint is not None and self.last_checkpoint.name == f"step_{self.step:06d}"):
            self.save()
        checkpoint = self.last_checkpoint if self.world.is_main else None
        raise AuditStopped(stop_message(self.step, onset, checkpoint, self.run_dir), step=self.step, check=onset.check, checkpoint=checkpoint)

    def _fresh_batch(self) -> tuple[Batch, int]:
        """The next batch sampled within `max_off_policy_steps` of the current weights."""
        dropped = 0
        while True:
            with self.trainer.full_weights() if self.config.engine.kind == "local" else contextlib.nullcontext():
                batch = self.orchestrator.next_batch(self.step)  # FSDP: a local engine samples with the full weights
            if self.step - batch.policy_version <= self.config.algorithm.max_off_policy_steps:
                return batch, dropped
            dropped += 1
            self.orchestrator.take_review(batch)  # never trained: its findings are not the step's
            logger.warning("dropped a batch sampled at version %d for step %d", batch.policy_version, self.step)

    def evaluate(self) -> dict[str, float]:
        return self.orchestrator.evaluate(self.eval_examples, self.config.eval.temperature)

    # -- checkpoints ---------------------------------------------------------------------
    def save(self) -> Path:
        """Write this step's checkpoint. Every rank calls it: each rank samples its own
        rollouts, so every rank's RNG states go into it (gathered to rank 0), and under FSDP
        every rank writes its shards; rank 0 writes the rest."""
        rng_by_rank = gather_to_main(ckpt.rng_state(self.orchestrator.engine.rng_state()), self.world)
        path = self.run_dir / ckpt.CHECKPOINTS / f"step_{self.step:06d}"
        if not (self.world.is_main or self.trainer.sharded):
            self.last_checkpoint = path  # rank 0 writes it
            return path
        trained = self.trainer.state_dict()
        state = {
            "step": self.step,
            "weights": trained["weights"],
            "optimizer": trained["optimizer"],
            "scheduler": trained["scheduler"],
            "rng": rng_by_rank[0] if rng_by_rank else None,
            "rng_by_rank": rng_by_rank,
            "data": self.data_position,
            "logs": ckpt.log_sizes(self.run_dir, LOG_FILES),
        }
        if self.trainer.sharded:
            self.last_checkpoint = save_sharded(
                self.run_dir, self.step, state, self.model, self.trainer.optimizer, self.tokenizer,
                self.config.checkpoint.keep, self.world)
            return self.last_checkpoint
        self.last_checkpoint = ckpt.save_checkpoint(self.run_dir, self.step, state, self.model, self.tokenizer, self.config.checkpoint.keep)
        return self.last_checkpoint

    def resume(self, checkpoint: Path, state: dict[str, Any]) -> None:
        """Continue from `state`, read from `checkpoint` by `ckpt.load_state`, and publish
        the resumed weights (a server started from the initial ones)."""
        try:
            self.trainer.load_state_dict(state, checkpoint)
            self.orchestrator.engine.set_rng_state(ckpt.restore_rng(ckpt.rank_rng(state, self.world.rank)))
            self.orchestrator.data.seek(state["data"])
        except (ValueError, RuntimeError, KeyError, TypeError, IndexError) as exc:
            raise ckpt.CheckpointError(f"{checkpoint / ckpt.STATE_FILE}: does not fit this run's model and config ({ckpt.first_line(exc)})") from None
        self.data_position = state["data"]
        self.step = state["step"]
        self.last_checkpoint = checkpoint
        self.orchestrator.publish(self.model, self.step)
