"""`MathRubric`: correctness by math-verify, in worker processes with a time limit.

`math_equal` (lmgym.rubrics.math) refuses the inputs known to make sympy run for ever,
but a model can always write a new one, and a comparison stuck inside the event loop
would stall every rollout of the run. So here each comparison runs in a small pool of
worker processes: one that outlasts `timeout_s` has its worker killed (the pool is
rebuilt), and the answer scores 0 with the weight-0 metric `math_timeout` set to 1, so
a run can see how often that happens. Timeouts count run time, not time queued: at most
`max_workers` comparisons are in flight.

The answer is the parser's field (`<answer>` with an XMLParser) or the reply's last
line of text; from either, the content of the last `\\boxed{...}` is taken when there
is one.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import weakref
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

from lmgym.parsers.parser import Parser
from lmgym.rubrics.math import math_equal
from lmgym.rubrics.rubric import Rubric


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    position = text.index("{", start) + 1
    depth, content_start = 1, position
    while position < len(text):
        depth += {"{": 1, "}": -1}.get(text[position], 0)
        if depth == 0:
            return text[content_start:position]
        position += 1
    return None  # unbalanced: no answer


def extract_answer(completion: Any, parser: Parser) -> str | None:
    answer = parser.parse_answer(completion)
    if answer is None:
        return None
    return last_boxed(answer) or answer


class VerifyPool:
    """math_equal in worker processes; a comparison that outlasts the limit kills its worker."""

    def __init__(self, max_workers: int = 2, timeout_s: float = 5.0, compare: Callable[[str | None, str], bool] = math_equal):
        """`compare` runs in the workers, so it must be a module-level (picklable) function."""
        self.max_workers, self.timeout_s, self.compare = max_workers, timeout_s, compare
        self._executor: ProcessPoolExecutor | None = None
        self._limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # forkserver: workers start from a clean process, not a fork of one with threads
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["lmgym.rubrics.math"])
            self._executor = ProcessPoolExecutor(self.max_workers, mp_context=context)
        return self._executor

    def _kill(self) -> None:
        """Stop every worker now: a stuck comparison cannot be cancelled any other way."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        for process in list(getattr(executor, "_processes", {}).values()):  # no public API before 3.14
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    async def equal(self, prediction: str | None, gold: str) -> bool | None:
        """Whether they are equal; None when the comparison ran out of time."""
        loop = asyncio.get_running_loop()
        limit = self._limits.setdefault(loop, asyncio.Semaphore(self.max_workers))
        async with limit:
            for attempt in range(2):
                executor = self._pool()
                try:
                    job = loop.run_in_executor(executor, self.compare, prediction, gold)
                    return await asyncio.wait_for(job, self.timeout_s)
                except asyncio.TimeoutError:
                    if self._executor is executor:
                        self._kill()
                    return None
                except BrokenProcessPool:  # killed under us for another comparison's timeout
                    if self._executor is executor:
                        self._kill()
                    if attempt:
                        raise
        return None

    def close(self) -> None:
        self._kill()


@functools.lru_cache(maxsize=None)
def shared_pool(max_workers: int, timeout_s: float) -> VerifyPool:
    """One pool per setting for the whole process: worker start-up (sympy) is paid once."""
    return VerifyPool(max_workers, timeout_s)


class MathRubric(Rubric):
    """`math_correct` (1 when the extracted answer equals the reference), then any other
    functions, then the metric `math_timeout`."""

    def __init__(
        self,
        parser: Parser | None = None,
        *,
        funcs: Sequence[Callable[..., Any]] = (),
        weights: Sequence[float] | None = None,
        correct_weight: float = 1.0,
        timeout_s: float = 5.0,
        max_workers: int = 2,
    ):
        super().__init__(parser=parser)
        self.pool = shared_pool(max_workers, timeout_s)

        async def math_correct(completion, answer, parser, state) -> float:
            equal = await self.pool.equal(extract_answer(completion, parser), str(answer))
            state["math_timeout"] = equal is None
            return 1.0 if equal else 0.0

        def math_timeout(state) -> float:
            return float(state.get("math_timeout", False))

        self.add(math_correct, correct_weight).extend(funcs, weights).add(math_timeout, 0.0)
