"""`run(main)`: `asyncio.run` tuned for thousands of requests in flight.

* uvloop's event loop when uvloop is installed: its loop and transports are written in C,
  and with thousands of requests in flight the loop's own bookkeeping and the socket calls
  are a large part of the orchestrator's CPU. `LMGYM_EVENT_LOOP=asyncio` keeps asyncio's.
* The cyclic garbage collector's youngest generation collected every 50,000 allocations
  instead of every 700 while `main` runs: each rollout allocates many short-lived
  containers (messages, records, futures) that reference counting frees anyway, and at
  -c 1024 the default threshold spent ~20% of the CPU per rollout traversing the live
  ones (benchmarks/eval_overhead.py). The threshold is put back afterwards.

Everything else is `asyncio.run`'s: Ctrl-C cancels `main`, and the loop is closed afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")
GC_YOUNG_THRESHOLD = 50_000


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
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_YOUNG_THRESHOLD), *threshold[1:])
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(main)
    finally:
        gc.set_threshold(*threshold)
