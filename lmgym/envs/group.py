"""`EnvGroup`: several environments served as one dataset.

Each example keeps its own environment: its rollout runs through that environment's
loop, tools, sampling defaults and turn budget, and is scored by its rubric, which sees
the example as that environment knows it (its own id and task). In the
group, an example's `task` is its environment's name and its id is prefixed with it
(`wordle/17`; training examples `wordle/train/17`, as environments number both splits
from 0), so ids stay unique, results resume, and the summary reports every metric per
environment. The environments' examples are interleaved, so the first `n` of an
evaluation are a balanced mix rather than all of the first environment.

Training samples the interleaved dataset uniformly; `sft_examples` is not combined.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

from lmgym.clients.base import ModelClient
from lmgym.envs.base import Environment
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Example, Rollout

SCORED_FIELDS = [f.name for f in dataclasses.fields(Rollout) if f.name != "example"]  # what scoring may set


def interleave(lists: Sequence[Sequence[Example]]) -> list[Example]:
    """a1 b1 c1 a2 b2 a3 ...: round robin until every list is used up."""
    missing = object()
    return [x for x in chain.from_iterable(zip_longest(*lists, fillvalue=missing)) if x is not missing]


class EnvGroup(Environment):
    def __init__(self, envs: Mapping[str, Environment]):
        if not envs:
            raise ValueError("EnvGroup needs at least one environment")
        bad = [name for name in envs if not name or "/" in name]
        if bad:
            raise ValueError(f"environment names must be non-empty and contain no '/': {bad}")
        self.envs = dict(envs)
        self.parser = next(iter(self.envs.values())).parser
        self.rubric = Rubric(parser=self.parser)  # unused: each example is scored by its own environment
        self.sampling_args, self.max_turns, self.tools, self.sft_examples = {}, 1, None, None
        # a check skipped by one environment would hide findings in the others: skip only the shared ones
        shared = set.intersection(*(set(env.audit_skip) for env in self.envs.values()))
        first = next(iter(self.envs.values()))
        self.audit_skip = {check: first.audit_skip[check] for check in sorted(shared)}
        criteria = {(env.pass_metric, env.pass_threshold) for env in self.envs.values()}
        self.pass_metric, self.pass_threshold = criteria.pop() if len(criteria) == 1 else ("reward", 1.0)
        self._originals: dict[Any, tuple[Environment, Example]] = {}
        self.dataset = self._relabel(lambda env: env.dataset, "train/")
        self.eval_dataset = self._relabel(lambda env: env.eval_dataset if env.eval_dataset is not None else env.dataset, "")

    def _relabel(self, split, tag: str) -> list[Example] | None:
        """`tag` keeps ids of the two splits apart: environments number both from 0."""
        per_env = []
        for name, env in self.envs.items():
            examples = []
            for original in split(env) or []:
                example = dataclasses.replace(original, id=f"{name}/{tag}{original.id}", task=name)
                self._originals[example.id] = (env, original)
                examples.append(example)
            per_env.append(examples)
        merged = interleave(per_env)
        return merged or None

    def get_eval_examples(self, n: int = -1, seed: int | None = None) -> list[Example]:
        """`n` examples *of each* environment (all when n < 0), shuffled per environment
        with `seed`, then interleaved: `-n 2` on `a,b` is two of a and two of b."""
        per_env = []
        for name in self.envs:
            own = [e for e in self.eval_dataset or [] if e.task == name]
            if seed is not None:
                random.Random(seed).shuffle(own)
            per_env.append(own if n < 0 else own[:n])
        return interleave(per_env)

    def environment_of(self, example: Example) -> tuple[Environment, Example]:
        """The environment an example belongs to, and the example as that environment knows it."""
        try:
            return self._originals[example.id]
        except KeyError:
            raise KeyError(f"example {example.id!r} is not from this EnvGroup ({', '.join(self.envs)})") from None

    def use_run_dir(self, run_dir: Path) -> None:
        for env in self.envs.values():
            env.use_run_dir(run_dir)

    @property
    def has_group_functions(self) -> bool:
        return any(env.has_group_functions for env in self.envs.values())

    async def start(self) -> None:
        started = []
        try:
            for env in self.envs.values():
                await env.start()
                started.append(env)
        except BaseException:
            for env in reversed(started):
                await env.stop()
            raise

    async def stop(self) -> None:
        for env in reversed(self.envs.values()):
            await env.stop()

    async def rollout(self, client: ModelClient, model: str, example: Example, *, index: int = 0, sampling_args: Mapping[str, Any] | None = None) -> Rollout:
        env, original = self.environment_of(example)
        rollout = await env.rollout(client, model, original, index=index, sampling_args=sampling_args)
        rollout.example = dataclasses.replace(rollout.example, id=example.id, task=example.task)  # its prompt may have grown
        return rollout

    async def score_group(self, rollouts: Sequence[Rollout]) -> None:
        """Scored by the example's own environment, on views of the rollouts that show its
        own example (id, task); the group's rollouts keep theirs throughout."""
        if not rollouts:
            return
        env, original = self.environment_of(rollouts[0].example)
        views = [dataclasses.replace(rollout, example=original) for rollout in rollouts]
        await env.score_group(views)
        for rollout, view in zip(rollouts, views):
            for name in SCORED_FIELDS:
                setattr(rollout, name, getattr(view, name))

