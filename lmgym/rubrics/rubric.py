"""Weighted reward functions over rollouts.

A reward function is a plain sync or async function. It declares the keyword arguments
it needs and the rubric injects only those, so `def correct(completion, answer)` is
testable in one line without a trainer. Available names: `prompt`, `completion`,
`answer`, `state`, `info`, `task`, `parser`, `example_id`, and any extra dataset column
(kept in `info`).

A *group* reward function sees every rollout of one example at once (for relative
scores such as "shortest correct answer"). It is declared with the `@group_reward`
decorator or simply by plural argument names (`prompts`, `completions`, `answers`,
`states`, `infos`, `tasks`), and returns one float per rollout. Each argument it declares,
singular or plural, is the list of that value over the group's rollouts.

Every function's value is logged as a metric under its name; the reward is the weighted
sum. A function that raises marks the rollout as errored: it is never silently scored 0,
which would train the model on an infrastructure bug. A *fatal* error (a judge server
that is unreachable or rejects the key) propagates and stops the run instead.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

from lmgym.errors import RewardError
from lmgym.parsers.parser import Parser
from lmgym.types import Rollout, RolloutError

RewardFunc = Callable[..., Any]

_PLURALS = {
    "prompts": "prompt",
    "completions": "completion",
    "answers": "answer",
    "states": "state",
    "infos": "info",
    "tasks": "task",
    "example_ids": "example_id",
}
_GROUP_ATTR = "__lmgym_group_reward__"


def group_reward(func: RewardFunc) -> RewardFunc:
    """Mark `func` as a group reward function (it returns one score per rollout)."""
    setattr(func, _GROUP_ATTR, True)
    return func


def rollout_kwargs(rollout: Rollout, parser: Parser) -> dict[str, Any]:
    """Every value a reward function may ask for, for one rollout."""
    example = rollout.example
    return {
        **example.info,
        "prompt": example.prompt,
        "completion": rollout.completion,
        "answer": example.answer,
        "state": rollout.state,
        "info": example.info,
        "task": example.task,
        "example_id": example.id,
        "parser": parser,
    }


@dataclass(frozen=True)
class _Scorer:
    """A reward function with its weight and the argument names it declared."""

    func: RewardFunc
    weight: float

    @cached_property
    def name(self) -> str:
        return getattr(self.func, "__name__", type(self.func).__name__)

    @cached_property
    def params(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.func).parameters)

    @cached_property
    def takes_any_kwargs(self) -> bool:
        return any(
            p.kind is inspect.Parameter.VAR_KEYWORD
            for p in inspect.signature(self.func).parameters.values()
        )

    @cached_property
    def is_group(self) -> bool:
        return getattr(self.func, _GROUP_ATTR, False) or any(p in _PLURALS for p in self.params)

    def select(self, available: dict[str, Any]) -> dict[str, Any]:
        if self.takes_any_kwargs:
            return available
        missing = [p for p in self.params if p not in available]
        if missing:
            raise RewardError(
                f"reward function {self.name!r} asks for {missing}, which no rollout has; "
                f"available: {sorted(available)}"
            )
        return {p: available[p] for p in self.params}

    async def call(self, kwargs: dict[str, Any]) -> Any:
        value = self.func(**self.select(kwargs))
        if inspect.isawaitable(value):
            value = await value
        return value


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RewardError(f"reward function {name!r} returned {value!r}, not a number")
    return float(value)


class Rubric:
    """Weighted reward functions; `score_group` scores the rollouts of one example."""

    def __init__(
        self,
        funcs: Sequence[RewardFunc] = (),
        weights: Sequence[float] | None = None,
        parser: Parser | None = None,
    ):
        self.parser = parser or Parser()
        self._scorers: list[_Scorer] = []
        self.extend(funcs, weights)

    def extend(self, funcs: Sequence[RewardFunc], weights: Sequence[float] | None = None) -> Rubric:
        """Add several functions (weight 1.0 each unless `weights` are given)."""
        if weights is not None and len(weights) != len(funcs):
            raise ValueError(f"Rubric got {len(funcs)} functions but {len(weights)} weights")
        for i, func in enumerate(funcs):
            self.add(func, 1.0 if weights is None else weights[i])
        return self

    def add(self, func: RewardFunc, weight: float = 1.0) -> Rubric:
        self._scorers.append(_Scorer(func, float(weight)))
        return self

    def use_run_dir(self, run_dir: Path) -> None:
        """Where a rubric may keep what it must not recompute on resume (generated criteria)."""

    @property
    def funcs(self) -> list[RewardFunc]:
        return [s.func for s in self._scorers]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self._scorers]

    @property
    def weights(self) -> list[float]:
        return [s.weight for s in self._scorers]

    @property
    def has_group_functions(self) -> bool:
        return any(s.is_group for s in self._scorers)

    async def score_group(self, rollouts: Sequence[Rollout]) -> None:
        """Fill in `reward` and `metrics` of each rollout that has not already failed."""
        live = [r for r in rollouts if r.error is None]
        if not live:
            return
        values: dict[int, dict[str, float]] = {id(r): {} for r in live}
        per_rollout = [rollout_kwargs(r, self.parser) for r in live]
        for scorer in self._scorers:
            if scorer.is_group:
                await self._run_group(scorer, live, per_rollout, values)
            else:
                for rollout, kwargs in zip(live, per_rollout):
                    await self._run_single(scorer, rollout, kwargs, values)
        for rollout in live:
            if rollout.error is not None:
                continue
            metrics = values[id(rollout)]
            rollout.metrics.update(metrics)
            rollout.reward = sum(s.weight * metrics[s.name] for s in self._scorers)

    async def _run_single(self, scorer, rollout, kwargs, values) -> None:
        if rollout.error is not None:
            return
        try:
            values[id(rollout)][scorer.name] = _as_float(scorer.name, await scorer.call(kwargs))
        except Exception as exc:  # a raising reward function is recorded, never scored 0
            rollout.error = _reward_error(scorer.name, exc)

    async def _run_group(self, scorer, live, per_rollout, values) -> None:
        # every name, singular or plural, maps to the list over the group's rollouts
        grouped = {name: [kw[name] for kw in per_rollout] for name in per_rollout[0]}
        grouped.update({plural: grouped[single] for plural, single in _PLURALS.items()})
        grouped["parser"] = self.parser
        try:
            scores = await scorer.call(grouped)
            if len(scores) != len(live):
                raise RewardError(
                    f"group reward function {scorer.name!r} returned {len(scores)} scores "
                    f"for {len(live)} rollouts"
                )
            floats = [_as_float(scorer.name, s) for s in scores]
        except Exception as exc:
            for rollout in live:
                rollout.error = rollout.error or _reward_error(scorer.name, exc)
            return
        for rollout, score in zip(live, floats):
            values[id(rollout)][scorer.name] = score


def _reward_error(name: str, exc: Exception) -> RolloutError:
    if getattr(exc, "fatal", False):  # a judge that is unreachable fails every rollout alike
        raise exc
    if isinstance(exc, RewardError):
        return RolloutError(exc.kind, str(exc))
    return RolloutError(
        RewardError.kind, f"reward function {name!r} raised {type(exc).__name__}: {exc}"
    )
