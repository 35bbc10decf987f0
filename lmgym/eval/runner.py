"""Run an environment's rollouts concurrently and stream each result to disk.

`concurrency` workers pull (example, rollout index) jobs from one queue, so at most that
many requests are in flight and memory does not grow with the size of the run. A rollout
is written as soon as it is scored; when the rubric has group reward functions, the
rollouts of one example are scored and written together. A failed rollout is data: it is
written with its error. A *fatal* model error (server unreachable, key rejected) stops
the run with one message; what is on disk stays and `resume` continues it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lmgym.clients.base import ModelClient
from lmgym.envs.base import Environment
from lmgym.eval.results import RESULTS_FILE, ResultsWriter, read_results, rollout_key
from lmgym.eval.summary import Summary
from lmgym.types import Example, Rollout, RolloutRecord

OnRecord = Callable[[RolloutRecord, Summary], None]


@dataclass(frozen=True)
class EvalPlan:
    """Which rollouts a run consists of, and which are already on disk."""

    examples: Sequence[Example]
    rollouts_per_example: int
    done: frozenset[tuple[Any, int]] = frozenset()

    def jobs(self) -> deque[tuple[Example, int]]:
        return deque(
            (example, index)
            for example in self.examples
            for index in range(self.rollouts_per_example)
            if (example.id, index) not in self.done
        )

    @property
    def total(self) -> int:
        return len(self.examples) * self.rollouts_per_example


async def run_eval(
    env: Environment,
    client: ModelClient,
    *,
    model: str,
    examples: Sequence[Example],
    rollouts_per_example: int,
    concurrency: int,
    run_dir: Path,
    sampling_args: Mapping[str, Any] | None = None,
    summary: Summary | None = None,
    on_record: OnRecord | None = None,
    on_start: Callable[[EvalPlan], None] | None = None,
) -> Summary:
    """Evaluate `examples` × `rollouts_per_example`, continuing results already in `run_dir`."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if rollouts_per_example < 1:
        raise ValueError(f"rollouts per example must be at least 1, got {rollouts_per_example}")
    summary = summary or Summary()
    run_dir.mkdir(parents=True, exist_ok=True)
    env.use_run_dir(run_dir)
    results_path = run_dir / RESULTS_FILE
    grouped = env.has_group_functions
    wanted = {example.id for example in examples}
    existing = read_results(results_path, complete_groups_of=rollouts_per_example if grouped else None)
    done = set()
    for record in existing:
        key = rollout_key(record)
        if key[0] in wanted and key[1] < rollouts_per_example:
            done.add(key)
            summary.add(record)
    plan = EvalPlan(examples, rollouts_per_example, frozenset(done))
    if on_start:
        on_start(plan)
    jobs = plan.jobs()
    group_sizes: dict[Any, int] = {}
    for example, _ in jobs:
        group_sizes[example.id] = group_sizes.get(example.id, 0) + 1
    groups: dict[Any, list[Rollout]] = {}
    writer = ResultsWriter(results_path)

    async def finish(rollouts: list[Rollout]) -> None:
        await env.score_group(rollouts)
        records = [r.to_dict() for r in rollouts]
        writer.write(records)
        for record in records:
            summary.add(record)
            if on_record:
                on_record(record, summary)

    async def worker() -> None:
        while jobs:
            example, index = jobs.popleft()
            rollout = await env.rollout(client, model, example, index=index, sampling_args=sampling_args)
            if not grouped:
                await finish([rollout])
                continue
            group = groups.setdefault(example.id, [])
            group.append(rollout)
            if len(group) == group_sizes[example.id]:
                del groups[example.id]
                await finish(sorted(group, key=lambda r: r.index))

    try:
        async with env.running(), asyncio.TaskGroup() as tasks:
            for _ in range(min(concurrency, len(jobs))):
                tasks.create_task(worker())
    except BaseExceptionGroup as group_error:  # surface the first real cause, not the group
        raise group_error.exceptions[0] from None
    finally:
        writer.close()
    return summary
