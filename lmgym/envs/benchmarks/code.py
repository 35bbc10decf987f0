"""Code benchmarks: the code of a reply, and whether a check program passes in lmgym's sandbox."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from lmgym.parsers.parser import Parser
from lmgym.sandbox import Sandbox, SandboxLimits

BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


class CodeBlockParser(Parser):
    """The answer is the last ```python block of the final reply (or the reply itself when it has none)."""

    def parse(self, text: str) -> str | None:
        blocks = BLOCK.findall(text)
        return blocks[-1] if blocks else (text if text.strip() else None)


async def run_check(program: str, limits: SandboxLimits) -> dict[str, Any]:
    """{"passed": bool, "result": "passed" | "timed out" | "failed: ..."}: passed when the
    program exits cleanly within the limits, in a fresh sandbox."""
    async with Sandbox(limits) as sandbox:
        result = await sandbox.run(program)
    if result.limit == "timeout":
        return {"passed": False, "result": "timed out"}
    if result.exit_code != 0 or result.limit:
        last = (result.stderr.strip().splitlines() or [f"exit code {result.exit_code}"])[-1]
        return {"passed": False, "result": f"failed: {result.limit or last}"}
    return {"passed": True, "result": "passed"}


def passed_reward(parser: Parser, limits: SandboxLimits, program: Callable[[dict[str, Any], str], str]) -> Callable[..., Any]:
    """The reward `passed` of a code benchmark: 1 when `program(info, code)`, built from the
    reply's code, passes in a fresh sandbox; the check's outcome is kept in state["check"]."""

    async def passed(completion, info, state) -> float:
        code = parser.parse_answer(completion)
        state["check"] = await run_check(program(info, code), limits) if code else {"passed": False, "result": "no code in the reply"}
        return float(state["check"]["passed"])

    return passed
