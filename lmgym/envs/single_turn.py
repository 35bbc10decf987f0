"""`SingleTurnEnv`: one prompt, one reply, then the rubric. The base loop, stopped early."""

from __future__ import annotations

from typing import Any

from lmgym.envs.base import Environment
from lmgym.types import Messages


class SingleTurnEnv(Environment):
    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("max_turns", 1)
        super().__init__(*args, **kwargs)

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        return True
