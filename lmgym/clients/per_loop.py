"""`LoopClients`: one `OpenAIClient` (and its concurrency limit) per running event loop.

A second model that rollouts talk to (a judge, a simulated user, an opponent) is called
from whichever event loop runs the rollout: training runs one loop per step, and
asynchronous generation another in its own thread. An HTTP connection pool belongs to
the loop that opened it, so each loop gets its own client, dropped once its loop has
closed (or closed by `aclose` from within the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import Any

from lmgym.clients.openai import OpenAIClient


@dataclass
class Bound:
    """What one event loop uses: its client, its limit, and (for a judge) questions in flight."""

    client: OpenAIClient
    limit: asyncio.Semaphore | None
    pending: dict[str, asyncio.Future] = field(default_factory=dict)

    def slot(self) -> Any:
        """`async with bound.slot():` waits for a free request slot (none when unlimited)."""
        return self.limit if self.limit is not None else contextlib.nullcontext()


class LoopClients:
    def __init__(
        self, base_url: str | None, api_key_var: str, *, max_concurrency: int | None = None, max_retries: int = 3, timeout: float = 120.0
    ):
        self.base_url, self.api_key_var = base_url, api_key_var
        self.max_concurrency, self.max_retries, self.timeout = max_concurrency, max_retries, timeout
        self._loops: dict[asyncio.AbstractEventLoop, Bound] = {}

    def bound(self) -> Bound:
        loop = asyncio.get_running_loop()
        for old in [old for old in self._loops if old.is_closed()]:
            del self._loops[old]
        if loop not in self._loops:
            client = OpenAIClient(self.base_url, os.environ.get(self.api_key_var), timeout=self.timeout, max_retries=self.max_retries)
            limit = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
            self._loops[loop] = Bound(client, limit)
        return self._loops[loop]

    async def aclose(self) -> None:
        """Close the running loop's client (the others closed with their loops)."""
        bound = self._loops.pop(asyncio.get_running_loop(), None)
        if bound is not None:
            await bound.client.aclose()
