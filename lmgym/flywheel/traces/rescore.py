"""Re-scoring kept traces with an environment's rubric, as one-turn rollouts.

Recorded traffic has no reference answer, so this is also where a rubric that needs one
is refused, naming the reward functions that do.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Sequence

from lmgym import errors
from lmgym.flywheel.traces.read import Counts, Selected
from lmgym.types import Example, Rollout, Turn

logger = logging.getLogger(__name__)


def answer_functions(rubric: Any) -> list[str]:
    """Names of the rubric's reward functions that need the reference answer."""
    from lmgym.rubrics.judge import template_fields

    names = []
    for func, name in zip(rubric.funcs, rubric.names):
        template = getattr(func, "template", None)
        uses_template = isinstance(template, str) and "answer" in template_fields(template)
        if {"answer", "answers"} & set(inspect.signature(func).parameters) or uses_template:
            names.append(name)
    return names


def trace_rollout(selected: Selected) -> Rollout:
    """A trace as a scored-to-be one-turn rollout (no reference answer)."""
    trace = selected.trace
    example = Example(id=str(trace.get("id")), prompt=selected.prompt, answer=None, info={})
    finish = (trace.get("response") or {}).get("finish_reason")
    rollout = Rollout(example=example, turns=[Turn(assistant=selected.completion, finish_reason=finish)])
    rollout.state.update(turn=1, stop_reason="done")
    return rollout


def check_rescorable(env: Any) -> None:
    """A UsageError when `env`'s rubric cannot score traffic that has no reference answer."""
    from lmgym.envs.group import EnvGroup

    if isinstance(env, EnvGroup):
        raise errors.UsageError("re-score with one environment, not a group: traces belong to none of its members")
    needing = answer_functions(env.rubric)
    if needing:
        raise errors.UsageError(
            f"cannot re-score traces with this rubric: {', '.join(needing)} need the reference `answer`, which "
            "recorded traffic does not have. Re-score with reward functions that do without it (format rewards, "
            "judges whose template does not name {answer}, guards)."
        )


async def rescore(env: Any, selected: Sequence[Selected], *, concurrency: int = 16) -> list[Rollout]:
    """Score every selected trace with `env`'s rubric; sets `reward` on each `Selected`."""
    check_rescorable(env)
    rollouts = [trace_rollout(s) for s in selected]
    limit = asyncio.Semaphore(concurrency)

    async def score(rollout: Rollout) -> None:
        async with limit:
            await env.score_group([rollout])

    async with env.running():
        await asyncio.gather(*(score(r) for r in rollouts))
    for item, rollout in zip(selected, rollouts):
        item.reward = rollout.reward if rollout.error is None else None
    return rollouts


def keep_rewarded(selected: Sequence[Selected], rollouts: Sequence[Rollout], min_reward: float | None, counts: Counts) -> list[Selected]:
    """Drop the traces whose re-scoring failed or fell below `min_reward`."""
    kept = []
    for item, rollout in zip(selected, rollouts):
        if rollout.error is not None:
            logger.warning("trace %s: re-scoring failed: %s", item.trace.get("id"), rollout.error.message)
            counts.drop("rescore_error")
        elif min_reward is not None and rollout.reward < min_reward:
            counts.drop("below_min_reward")
        else:
            kept.append(item)
    counts.kept = len(kept)
    return kept
