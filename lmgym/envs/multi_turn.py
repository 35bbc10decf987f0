"""`MultiTurnEnv`: the author writes `env_response` (and usually `is_done`).

The loop in `Environment.rollout` calls `env_response` after every assistant message that
does not end the episode, the last one of the turn budget included.
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
