"""`PythonEnv`: a `python` tool backed by a local `Sandbox`, one per rollout.

`setup_state` opens the rollout's sandbox into `state["sandbox"]` (and fails the run at
once where code cannot be isolated, instead of failing every tool call); the tool gets it
as a hidden argument, so the model never sees or forges it. `teardown_state` closes it
and leaves a JSON-safe record in its place: `state["sandbox"]` becomes `{"network": ...,
"memory_limit": ..., "user_namespaces": ..., "uid": ..., "runs": [metadata of each run]}`,
which results.jsonl keeps. The weight-0 metrics `sandbox_runs`, `sandbox_timeouts` and
`sandbox_limits` (runs that hit any limit) come from that record.

Calls of one turn share the sandbox and run one after another, so the tool timeout is
the sandbox's plus a margin for waiting.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from lmgym.envs.tools import StatefulToolEnv
from lmgym.rubrics.rubric import Rubric
from lmgym.sandbox import Sandbox, SandboxLimits
from lmgym.types import Example


async def python(code: str, sandbox: Sandbox) -> str:
    """Run a Python program and return what it printed (stdout, then stderr).

    Each call starts a fresh interpreter in the same working directory: files written
    there persist between calls, variables do not. There is no network access. Long
    output is cut in the middle.

    Args:
        code: a complete Python program; print() what you want to see.
    """
    return (await sandbox.run(code)).to_text()


def _runs(state: dict[str, Any]) -> list[dict[str, Any]]:
    record = state.get("sandbox")
    return record.get("runs", []) if isinstance(record, dict) else []


def sandbox_runs(state) -> float:
    return float(len(_runs(state)))


def sandbox_timeouts(state) -> float:
    return float(sum(run["limit"] == "timeout" for run in _runs(state)))


def sandbox_limits(state) -> float:
    """Runs that hit any limit: time, output, memory, file size, CPU."""
    return float(sum(run["limit"] is not None for run in _runs(state)))


class PythonEnv(StatefulToolEnv):
    def __init__(
        self,
        *args: Any,
        limits: SandboxLimits | None = None,
        tools: Sequence[Callable[..., Any]] = (),
        hidden_args: Sequence[str] = (),
        rubric: Rubric | None = None,
        **kwargs: Any,
    ):
        """`tools` are extra tools besides `python`; they may take `sandbox` too."""
        self.limits = limits or SandboxLimits()
        rubric = rubric or Rubric(parser=kwargs.get("parser"))
        for metric in (sandbox_runs, sandbox_timeouts, sandbox_limits):
            rubric.add(metric, weight=0.0)
        kwargs.setdefault("tool_timeout", self.limits.timeout_s + 30)
        super().__init__(*args, tools=[python, *tools], hidden_args=["sandbox", *hidden_args], rubric=rubric, **kwargs)

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        await super().setup_state(state, example)
        state["sandbox"] = Sandbox(self.limits)
        await state["sandbox"].prepare()

    async def teardown_state(self, state: dict[str, Any]) -> None:
        sandbox = state.get("sandbox")
        if isinstance(sandbox, Sandbox):
            try:
                await sandbox.close()
            finally:
                isolation = sandbox.isolation
                state["sandbox"] = {
                    "network": isolation.network if isolation else None,
                    "memory_limit": sandbox.memory_limit,
                    "user_namespaces": isolation.user_namespaces if isolation else None,
                    "uid": sandbox.uid,
                    "runs": sandbox.history,
                }
        await super().teardown_state(state)
