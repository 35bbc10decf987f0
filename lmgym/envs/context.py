"""`RolloutContext`: what one rollout's hooks may need besides `messages` and `state`.

An environment object serves many rollouts at once, so anything that belongs to one
rollout (its example, its tools, its seat, the client it samples from) cannot live on
`self`. The loop builds one context per rollout and hands it to every hook that declares
a `context` parameter:

    async def env_response(self, messages, state, context):
        tools = context.tools          # this example's tools
        seat = context.seat            # this rollout's seat in a multi-agent game

Hooks without the parameter are called exactly as before. The context is frozen: its
fields are fixed when the rollout starts (`Environment.tools_for` and
`Environment.seat_for` choose the tools and the seat); `state` is the rollout's own dict,
which hooks fill as they always have.
"""

from __future__ import annotations

import functools
import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lmgym.clients.base import ModelClient
from lmgym.types import Example

if TYPE_CHECKING:
    from lmgym.envs.base import Environment


@dataclass(frozen=True)
class RolloutContext:
    """One rollout, as its hooks see it."""

    env: Environment  # the environment the rollout runs in
    example: Example  # the example as this environment knows it (its own id and task)
    index: int  # which rollout of the example this is (0 .. r-1)
    state: dict[str, Any]  # the rollout's state, the same dict the hooks receive
    tools: list[dict[str, Any]] | None  # the tool schemas offered to the model in this rollout
    seat: str | None  # the learner's seat in a multi-agent game, else None
    client: ModelClient  # the client this rollout samples from (self-play opponents use it too)
    model: str
    sampling: dict[str, Any]  # the environment's sampling defaults with the run's on top
    rng: random.Random  # seeded by example id and rollout index: a rollout's randomness replays


def declares_context(hook: Callable[..., Any]) -> bool:
    """Whether a hook takes a `context` argument (looked up once per function)."""
    return _declares_context(getattr(hook, "__func__", hook))


@functools.cache
def _declares_context(func: Callable[..., Any]) -> bool:
    try:
        return "context" in inspect.signature(func).parameters
    except (TypeError, ValueError):  # a builtin without a signature takes no context
        return False
