"""MBPP (Google): 500 basic Python programming tasks, graded by running their test asserts in lmgym's sandbox.

    lmgym eval mbpp -m MODEL -b URL -n -1 -r 10     # pass@1 .. pass@10 over the 500 test tasks

Data: google-research-datasets/mbpp, config full, test split
(full/test-00000-of-00001.parquet), at commit 4bb6404fdc6cacfda99d4ac4205087b89d32030c
of the dataset's repository, from the Hugging Face hub, or a local copy in the same
columns (`task_id`, `text`, `code`, `test_list`, `test_setup_code`): `-a '{"data_path":
"FILE"}'` or LMGYM_BENCHMARK_DATA (see lmgym.envs.benchmarks.hub). The commit is the one
several public evaluation setups pin; it was not checked against the hub from here (no
network).

The model sees the task and its three test asserts, as in the MBPP paper's prompt (zero
shot here; the paper gave three solved tasks first), and replies with code in a ```python
block (the last one; the whole reply when it has none). Grading is the benchmark's: the
task's setup code, the reply's code, then each assert, run as one program in lmgym's
sandbox; the reward `passed` is 1 when it exits cleanly within the time limit, else 0.
"""

from __future__ import annotations

from datasets import Dataset

from lmgym import Rubric, SingleTurnEnv
from lmgym.envs.benchmarks import CodeBlockParser, HubFile, Row, load_rows, passed_reward
from lmgym.sandbox import SandboxLimits

SOURCE = HubFile("mbpp", "google-research-datasets/mbpp", "4bb6404fdc6cacfda99d4ac4205087b89d32030c",
                 "full/test-00000-of-00001.parquet", "test", columns=("task_id", "text", "test_list"))
SYSTEM_PROMPT = "Write the Python code the task asks for. Reply with the code, and any imports it needs, in one ```python code block."
PROMPT = "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{tests}"


def program(setup: str, code: str, tests: list[str]) -> str:
    """The benchmark's check: the setup code, the solution, then every assert."""
    return "\n".join([setup, code, "", *tests, ""])


def task(row: Row) -> Row:
    tests = list(row["test_list"])
    return {"id": row["task_id"], "question": PROMPT.format(text=row["text"], tests="\n".join(tests)),
            "answer": row.get("code", ""), "tests": tests, "setup": row.get("test_setup_code") or ""}


def load_environment(data_path: str | None = None, timeout_s: float = 10.0) -> SingleTurnEnv:
    rows = [task(row) for row in load_rows(SOURCE, data_path)]
    parser = CodeBlockParser()
    limits = SandboxLimits(timeout_s=timeout_s)

    passed = passed_reward(parser, limits, lambda info, code: program(info["setup"], code, info["tests"]))
    return SingleTurnEnv(
        eval_dataset=Dataset.from_list(rows),
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=Rubric([passed], parser=parser),
        sampling_args={"temperature": 0.0, "max_tokens": 1024},
        audit_skip={"reward_without_answer": "graded by running tests; the reference solution need not appear"},
    )
