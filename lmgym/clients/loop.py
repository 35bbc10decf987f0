"""`run(main)`: `asyncio.run`, on uvloop's event loop when uvloop is installed.

uvloop's loop and transports are written in C: with thousands of requests in flight the
loop's own bookkeeping and the socket calls are a large part of the orchestrator's CPU
(benchmarks/eval_overhead.py measures both loops). Everything else is `asyncio.run`'s:
Ctrl-C cancels `main`, and the loop is closed afterwards. `LMGYM_EVENT_LOOP=asyncio`
keeps the standard loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop` when it is installed and not turned off, else None (asyncio's)."""
    if os.environ.get("LMGYM_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
