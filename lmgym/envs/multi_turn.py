"""`MultiTurnEnv`: the author writes `env_response` (and usually `is_done`).

The loop in `Environment.rollout` calls `on_reply` after every assistant message, then
`is_done`, then `env_response` after every message that does not end the episode, the
last one of the turn budget included. `env_response` is abstract: a `MultiTurnEnv`
without one cannot be created (the model would talk to no one until the turn budget).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from lmgym.envs.base import Environment
from lmgym.types import Messages


class MultiTurnEnv(Environment):
    @abstractmethod
    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        """Messages the environment sends back after the model's latest reply."""
