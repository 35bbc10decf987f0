"""From environment to training batch: sample groups, score them, compute advantages.

The orchestrator runs the same `Environment.rollout` loop as `lmgym eval`, through the
client of a rollout engine (`lmgym.train.engines`), for `prompts_per_step` examples ×
`group_size` rollouts, scores each group with the environment's rubric (group reward
functions see the whole group), and turns the result into token-exact samples with one
advantage each.

A group containing a failed rollout is dropped whole: scoring the others relative to a
missing member would bias the advantages, and a failure must never become a reward of 0
that trains the model. Such drops are counted in the step's metrics.

Two orchestrators share that pipeline:

    Orchestrator        synchronous: each batch is sampled with the weights being trained
                        (published to the engine after each step), then trained on;
                        generation and training alternate. `algorithm.max_off_policy_steps = 0`.
    AsyncOrchestrator   a producer thread samples the next batches while the trainer trains,
                        from the engine's snapshot, which loads the weights published after
                        each step before its next batch. Batch i may be sampled with any
                        weights of version >= i - max_off_policy_steps: the producer waits
                        for fresher weights rather than run further ahead, so staleness
                        never exceeds the bound.

Every batch carries the policy version that sampled it and the data position after its
examples (so a checkpoint resumes the data where training, not generation, stopped).
With a live audit (`lmgym.train.live_audit`), each batch's scored groups are reviewed
before advantages are computed: a check set to penalize rewrites its flagged rollouts'
rewards there, and the loop takes the review with `take_review(batch)`.
The trainer corrects the staleness with importance weights (`lmgym.train.importance`).
"""

from __future__ import annotations

import asyncio
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from lmgym.clients.base import ModelClient
from lmgym.envs.base import Environment
from lmgym.train.advantages import dynamic_sampling_mask, group_advantages
from lmgym.train.batch import Batch
from lmgym.train.config import AlgorithmConfig, SamplingConfig
from lmgym.train.distributed import World, shard
from lmgym.train.engines.base import RolloutEngine
from lmgym.train.live_audit import LiveAudit, Review
from lmgym.train.tokens import rollout_samples
from lmgym.types import Example, Rollout

MODEL_NAME = "local"  # what environments see as the model name in training


@dataclass
class DataStream:
    """Endless examples in a fresh seeded order each epoch; `position` makes resume exact."""

    examples: Sequence[Example]
    seed: int
    epoch: int = 0
    index: int = 0

    def _order(self) -> list[int]:
        order = list(range(len(self.examples)))
        random.Random(f"{self.seed}/{self.epoch}").shuffle(order)
        return order

    def take(self, n: int) -> list[Example]:
        taken = []
        order = self._order()
        while len(taken) < n:
            if self.index == len(order):
                self.epoch, self.index = self.epoch + 1, 0
                order = self._order()
            taken.append(self.examples[order[self.index]])
            self.index += 1
        return taken

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def seek(self, position: dict[str, int]) -> None:
        self.epoch, self.index = position["epoch"], position["index"]


def sampling_args(config: SamplingConfig, temperature: float | None = None) -> dict[str, Any]:
    args = {"temperature": config.temperature if temperature is None else temperature, "top_p": config.top_p, "max_tokens": config.max_tokens}
    if config.stop:
        args["stop"] = list(config.stop)
    return args


async def run_groups(env: Environment, client: ModelClient, examples: Sequence[Example], group_size: int, sampling: dict[str, Any]) -> list[list[Rollout]]:
    """`group_size` rollouts of each example, all concurrently (the client batches them), scored.

    The environment is started and stopped around each call: every step runs in its own
    event loop, and what `start` opens (MCP sessions) belongs to one loop."""
    async with env.running():
        groups = await asyncio.gather(*(
            asyncio.gather(*(env.rollout(client, MODEL_NAME, example, index=i, sampling_args=sampling) for i in range(group_size)))
            for example in examples
        ))
        for group in groups:
            await env.score_group(group)
    return [list(group) for group in groups]


def rubric_metrics(rollouts: Sequence[Rollout], prefix: str = "") -> dict[str, float]:
    """Mean reward and mean of every rubric metric over the rollouts that were scored."""
    scored = [r for r in rollouts if r.error is None]
    metrics: dict[str, float] = {f"{prefix}errors": float(len(rollouts) - len(scored))}
    if scored:
        metrics[f"{prefix}reward"] = sum(r.reward for r in scored) / len(scored)
        for name in scored[0].metrics:
            metrics[f"{prefix}{name}"] = sum(r.metrics.get(name, 0.0) for r in scored) / len(scored)
    return metrics


def tool_calls_per_rollout(rollouts: Sequence[Rollout]) -> float:
    """Mean number of tool calls the policy made per rollout (0 when there are none)."""
    calls = sum(len(turn.assistant.get("tool_calls") or []) for r in rollouts for turn in r.turns)
    return calls / max(len(rollouts), 1)


def build_batch(groups: list[list[Rollout]], algorithm: AlgorithmConfig, max_seq_len: int) -> Batch:
    """Advantages and token samples from scored groups (see the module docstring)."""
    all_rollouts = [r for group in groups for r in group]
    metrics = rubric_metrics(all_rollouts)
    complete = [g for g in groups if all(r.error is None for r in g)]
    metrics["groups_dropped_errors"] = float(len(groups) - len(complete))
    metrics["groups"] = float(len(complete))
    if not complete:
        return Batch([], torch.zeros(0), metrics)
    rewards = torch.tensor([[r.reward for r in g] for g in complete], dtype=torch.float32)  # (G, N)
    metrics["reward_std"] = float(rewards.std(unbiased=False))
    metrics["groups_zero_variance"] = float((rewards == rewards[:, :1]).all(dim=1).sum())  # nothing to learn from them
    keep = dynamic_sampling_mask(rewards) if algorithm.dynamic_sampling else torch.ones(len(complete), dtype=torch.bool)
    metrics["groups_dropped_zero_variance"] = float((~keep).sum())
    advantages = group_advantages(rewards, algorithm.scale_rewards)  # (G, N)
    samples, groups_of, members_of, split, truncated = [], [], [], 0, 0
    for g, group in enumerate(complete):
        if not keep[g]:
            continue
        for n, rollout in enumerate(group):
            rollout_tokens, was_split = rollout_samples(rollout, max_seq_len)
            split += was_split
            for sample in rollout_tokens:
                truncated += sample.truncated
                if sample.truncated and algorithm.mask_truncated:
                    sample.loss_mask = [0] * len(sample.loss_mask)  # overlong filtering (DAPO)
                samples.append(sample)
                groups_of.append(g)
                members_of.append(n)
    metrics["rollouts_split_per_turn"] = float(split)
    metrics["truncated_fraction"] = truncated / max(len(samples), 1)
    metrics["completion_tokens"] = float(sum(s.num_completion_tokens for s in samples))
    return Batch(samples, advantages[groups_of, members_of], metrics)  # (B,): each sample its rollout's


class Orchestrator:
    """Produces one training batch per call, synchronously, from the current weights."""

    def __init__(
        self, env: Environment, engine: RolloutEngine, data: DataStream, algorithm: AlgorithmConfig, sampling: SamplingConfig,
        max_seq_len: int, *, records_per_step: int = 0, world: World = World(), audit: LiveAudit | None = None,
    ):
        """The orchestrator owns `engine` from here on: `close()` closes it."""
        self.env, self.engine, self.data = env, engine, data
        self.algorithm, self.sampling, self.max_seq_len = algorithm, sampling, max_seq_len
        self.records_per_step, self.world = records_per_step, world
        self.audit = audit
        self._reviews: dict[int, Review] = {}  # id(batch) -> its audit review, until the loop takes it
        self.last_eval_records: list[dict[str, Any]] = []  # the latest evaluation's rollouts

    def next_batch(self, step: int) -> Batch:
        """The batch to train at `step` (= the trainer's policy version)."""
        self.engine.refresh()
        return self._sample(self.engine, step)

    def _sample(self, engine: RolloutEngine, version: int) -> Batch:
        """A batch from `engine`, refreshed by the caller, labelled with its policy `version`."""
        examples = shard(self.data.take(self.algorithm.prompts_per_step), self.world)  # every rank takes the same, keeps its share
        position = self.data.position
        started = time.perf_counter()
        groups = asyncio.run(run_groups(self.env, engine.client, examples, self.algorithm.group_size, sampling_args(self.sampling)))
        elapsed = time.perf_counter() - started
        audited = self.audit.audit_batch(groups) if self.audit is not None else None  # may penalize: before advantages
        batch = build_batch(groups, self.algorithm, self.max_seq_len)
        if audited is not None:
            batch.metrics.update(audited.metrics)
            self._reviews[id(batch)] = audited.review
        batch.policy_version, batch.data_position = version, position
        batch.records = [group[0].to_dict() for group in groups[: self.records_per_step]]
        if self.env.tools:
            batch.metrics["tool_calls_per_rollout"] = tool_calls_per_rollout([r for g in groups for r in g])
        batch.metrics["generation_s"] = elapsed
        batch.metrics["generation_tokens_per_s"] = sum(len(t.token_ids or []) for g in groups for r in g for t in r.turns) / max(elapsed, 1e-9)
        return batch

    def take_review(self, batch: Batch) -> Review | None:
        """The live audit's review of `batch` (None without an audit), handed over once."""
        return self._reviews.pop(id(batch), None)

    def publish(self, model: Any, version: int) -> None:
        """New weights after an optimiser step (free for an engine that shares them)."""
        self.engine.publish(model, version)

    def close(self) -> None:
        """Stop any background work, and the engine."""
        self.engine.close()

    def evaluate(self, examples: Sequence[Example], temperature: float) -> dict[str, float]:
        """Held-out evaluation through the same loop, with the current weights: one rollout per example."""
        self.engine.refresh()
        groups = asyncio.run(run_groups(self.env, self.engine.client, examples, 1, sampling_args(self.sampling, temperature)))
        self.last_eval_records = [g[0].to_dict() for g in groups] if self.audit is not None else []
        metrics = rubric_metrics([g[0] for g in groups], prefix="eval/")
        if self.env.tools:
            metrics["eval/tool_calls_per_rollout"] = tool_calls_per_rollout([g[0] for g in groups])
        return metrics


class AsyncOrchestrator(Orchestrator):
    """Samples batches in a background thread from the engine's snapshot (see the module
    docstring). `self.engine` (the trainer's weights) still serves evaluation. With
    max_off_policy_steps = 0 it is synchronous but keeps generation on its own thread
    (to compare the two schedules with the same threads, as benchmarks/async_vs_sync.py does)."""

    def __init__(self, *args: Any, max_off_policy_steps: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if max_off_policy_steps < 0:
            raise ValueError(f"max_off_policy_steps must be >= 0, got {max_off_policy_steps}")
        self.max_off_policy_steps = max_off_policy_steps
        self._batches: queue.Queue[Batch | BaseException] = queue.Queue()
        self._weights = threading.Condition()
        self._version = 0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._sampler: RolloutEngine | None = None

    def next_batch(self, step: int) -> Batch:
        if self._thread is None:
            self._start(step)
        item = self._batches.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def publish(self, model: Any, version: int) -> None:
        """Publish to the engine, which hands its snapshot a copy that the producer loads
        before its next batch. Under the lock that the producer reads the version under,
        so a batch's version is always that of the weights it loaded. A remote engine
        (vLLM) takes the weights at once: a batch in progress then finishes on the newer
        weights, which the per-token importance weights account for."""
        with self._weights:
            self.engine.publish(model, version)
            self._version = version
            self._weights.notify_all()

    def close(self) -> None:
        with self._weights:
            self._stopping = True
            self._weights.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sampler is not None and self._sampler is not self.engine:
            self._sampler.close()
        self._sampler = None
        super().close()

    def _start(self, step: int) -> None:
        """The sampler's snapshot of the weights is taken now (after any resume)."""
        self._version = step
        self._sampler = self.engine.snapshot()
        self._thread = threading.Thread(target=self._produce, args=(self._sampler, step), name="lmgym-generation", daemon=True)
        self._thread.start()

    def _produce(self, sampler: RolloutEngine, first: int) -> None:
        index = first
        try:
            while True:
                with self._weights:
                    # batch `index` trains at version `index`: its weights may lag by the bound
                    self._weights.wait_for(lambda oldest=index - self.max_off_policy_steps: self._stopping or self._version >= oldest)
                    if self._stopping:
                        return
                    version = self._version
                    sampler.refresh()  # loads the weights of `version` (see `publish`)
                self._batches.put(self._sample(sampler, version))
                index += 1
        except BaseException as exc:  # the trainer re-raises it from next_batch
            self._batches.put(exc)
