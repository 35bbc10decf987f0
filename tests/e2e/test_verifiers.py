"""verifiers environments under lmgym, with `verifiers` 0.4.0 from PyPI in its own venv
(`make verifiers`: it requires openai<3, lmgym's venv has 3.x). Each test runs `lmgym eval
vf:NAME` (or `lmgym train`) there, on tasksets written for these tests in
tests/fixtures/verifiers_tasksets, against a scripted model served from this process; the
results are read, resumed and reported from here.

A process of that venv spends seconds importing verifiers (and torch, for `lmgym train`)
before it runs anything, so the commands run one after another in one process of it per
test worker (tests/verifiers_driver.py); one command, the smoke test of the real `lmgym`
there, still runs as its own process."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cli_runner import invoke, process_env
from paths import FIXTURES, ROOT, TESTS
from records import jsonl

from lmgym import errors
from lmgym.eval.results import read_metadata
from lmgym.registry import load_environment
from lmgym.testing import ScriptedServer, tool_call

VERIFIERS_PYTHON = Path(os.environ.get("LMGYM_VERIFIERS_PYTHON", Path.home() / ".cache" / "lmgym" / "verifiers-venv" / "bin" / "python"))
TASKSETS = FIXTURES / "verifiers_tasksets"
needs_venv = pytest.mark.skipif(not VERIFIERS_PYTHON.exists(), reason=f"no verifiers venv at {VERIFIERS_PYTHON}: make verifiers")


class VenvDriver:
    """One process of the verifiers venv running tests/verifiers_driver.py, which runs the
    `lmgym` commands it is sent one after another: started at the first command, closed at
    the module's end, and started afresh after a command that timed out or killed it."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log = None  # the driver's own stderr: what it says when it dies
        self.received = b""

    def start(self) -> subprocess.Popen:
        self.log = tempfile.TemporaryFile()
        self.received = b""
        # Its own session, so that closing it ends the processes its commands started too.
        self.process = subprocess.Popen([str(VERIFIERS_PYTHON), str(TESTS / "verifiers_driver.py")], cwd=ROOT,
                                        env=process_env(PYTHONPATH=str(TASKSETS)), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, start_new_session=True)
        return self.process

    def run(self, args: list[str], cwd: Path, timeout: float) -> dict:
        """The driver's answer to `lmgym ARGS` run in `cwd`: subprocess.TimeoutExpired after
        `timeout` seconds (the driver is killed), a RuntimeError naming why when the driver dies."""
        process = self.process or self.start()
        command = " ".join(["lmgym", *args])
        try:
            process.stdin.write(json.dumps({"args": args, "cwd": str(cwd)}).encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            self.died(command)
        deadline = time.monotonic() + timeout
        while b"\n" not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close(kill=True)
                raise subprocess.TimeoutExpired(command, timeout)
            if select.select([process.stdout], [], [], left)[0]:
                chunk = os.read(process.stdout.fileno(), 1 << 20)
                if not chunk:
                    self.died(command)
                self.received += chunk
        line, self.received = self.received.split(b"\n", 1)
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the verifiers driver failed to run `{command}`:\n{answer['error']}")
        return answer

    def died(self, command: str):
        pid = self.process.pid
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = "none yet"
        self.log.seek(0)
        said = self.log.read().decode(errors="replace")[-4000:]
        self.close(kill=True)
        raise RuntimeError(f"the verifiers driver (pid {pid}, {VERIFIERS_PYTHON}) ended with exit code {code} "
                           f"while running `{command}`; its stderr ends:\n{said}")

    def close(self, kill: bool = False) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        if not kill:
            process.stdin.close()  # the driver ends at the end of its requests
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                kill = True
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for stream in (process.stdin, process.stdout, self.log):
            with contextlib.suppress(OSError):
                stream.close()


DRIVER = VenvDriver()


@pytest.fixture(scope="module", autouse=True)
def close_the_driver():
    yield
    DRIVER.close()


def in_verifiers_venv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lmgym ARGS` run by the verifiers venv's Python, the test tasksets importable: in this
    worker's driver (VenvDriver), answered as the process `in_a_verifiers_venv_process` runs."""
    answer = DRIVER.run(list(args), ROOT, timeout)
    return subprocess.CompletedProcess([str(VERIFIERS_PYTHON), "-m", "lmgym", *args], answer["returncode"],
                                       answer["stdout"], answer["stderr"])


def in_a_verifiers_venv_process(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lmgym ARGS` as its own process of the verifiers venv's Python, the test tasksets importable."""
    return subprocess.run([str(VERIFIERS_PYTHON), "-m", "lmgym", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=process_env(PYTHONPATH=str(TASKSETS)), check=False)


def vf_eval(name: str, server: ScriptedServer, run: Path, *extra: str) -> subprocess.CompletedProcess:
    return in_verifiers_venv("eval", f"vf:{name}", "-b", server.base_url, "-m", "scripted", "-o", str(run), *extra)


def by_example(run: Path) -> dict:
    return {(r["example_id"], r["rollout"]): r for r in jsonl(run / "results.jsonl")}


def adder(request):
    """Right when the first number is even (tasks 0, 2, ...), a long wrong reply otherwise."""
    a, b = map(int, re.findall(r"\d+", request["messages"][-1]["content"])[:2])
    return str(a + b) if a % 2 == 0 else "I cannot say"


def bisecting_guesser(request):
    """Halves the range the env's "higher"/"lower" leaves."""
    low, high, guess = 0, 9, None
    for message in request["messages"]:
        if message["role"] == "assistant":
            guess = int(message["content"])
        elif message["role"] == "user" and message["content"] in ("higher", "lower"):
            low, high = (guess + 1, high) if message["content"] == "higher" else (low, guess - 1)
    return str((low + high) // 2)


def counter_player(overshoot: int = 0):
    """Adds target-2 (+ overshoot), then 2, reads the total, then says done."""

    def reply(request):
        target = int(re.search(r"to (\d+)", request["messages"][0]["content"]).group(1))
        turn = sum(m["role"] == "assistant" for m in request["messages"])
        if turn == 0:
            return {"content": None, "tool_calls": [tool_call("counter_add", {"amount": target - 2 + overshoot}, "c1")]}
        if turn == 1:
            return {"content": None, "tool_calls": [tool_call("counter_add", {"amount": 2}, "c2"), tool_call("counter_read", {}, "c3")]}
        return "done"

    return reply


@pytest.mark.skipif(importlib.util.find_spec("verifiers") is not None, reason="verifiers is installed in this venv")
def test_without_verifiers_the_error_says_how_to_get_it():
    with pytest.raises(errors.UsageError) as caught:
        load_environment("vf:vf_arith")
    message = str(caught.value)
    assert "make verifiers" in message and "openai<3" in message and "verifiers-venv/bin/lmgym eval vf:NAME" in message


@needs_venv
def test_a_single_turn_taskset_is_scored_by_its_own_weighted_rewards_and_metrics(tmp_path):
    run = tmp_path / "run"
    with ScriptedServer(reply=adder) as server:
        result = vf_eval("vf_arith", server, run, "-n", "-1", "-r", "2", "-a", '{"num_tasks": 4}')
    assert result.returncode == 0, result.stderr
    records = by_example(run)
    assert sorted(records) == [(i, r) for i in range(4) for r in range(2)]
    right, wrong = records[(2, 0)], records[(1, 1)]  # 2 + 6: "8"; 1 + 3: a long wrong reply
    assert right["prompt"] == [{"role": "system", "content": "You add numbers."},
                               {"role": "user", "content": "What is 2 + 6? Reply with the number only."}]
    assert right["completion"] == [{"role": "assistant", "content": "8"}] and right["answer"] == "8"
    assert right["metrics"] == {**right["metrics"], "correct": 1.0, "brief": 1.0, "reply_chars": 1.0}
    assert right["reward"] == 1.5  # correct (weight 1) + brief (weight 0.5)
    assert wrong["metrics"] == {**wrong["metrics"], "correct": 0.0, "brief": 0.0, "reply_chars": len("I cannot say")}
    assert wrong["reward"] == 0.0 and wrong["error"] is None
    summary = read_metadata(run)["summary"]
    assert summary["reward_mean"] == 0.75 and summary["metrics"]["correct"] == 0.5


@needs_venv
def test_the_agents_own_sampling_reaches_the_model_unless_the_run_overrides_it(tmp_path):
    agent = '{"num_tasks": 1, "env": {"agent": {"sampling": {"temperature": 0.25, "max_tokens": 7}}}}'
    with ScriptedServer(reply=adder) as server:
        result = vf_eval("vf_arith", server, tmp_path / "a", "-n", "-1", "-r", "1", "-a", agent)
        assert result.returncode == 0, result.stderr
        result = vf_eval("vf_arith", server, tmp_path / "b", "-n", "-1", "-r", "1", "-a", agent, "-S", '{"temperature": 0.9}')
        assert result.returncode == 0, result.stderr
    first, second = server.requests
    assert (first["temperature"], first["max_tokens"]) == (0.25, 7)
    assert (second["temperature"], second["max_tokens"]) == (0.9, 7)


@needs_venv
def test_a_multi_turn_env_drives_the_conversation_and_finalize_runs(tmp_path):
    run = tmp_path / "run"
    with ScriptedServer(reply=bisecting_guesser) as server:
        result = vf_eval("vf_guess", server, run, "-n", "-1", "-r", "1")
    assert result.returncode == 0, result.stderr
    records = by_example(run)
    assert sorted(k[0] for k in records) == ["secret-0", "secret-1", "secret-2", "secret-3"]
    secret_8 = records[("secret-2", 0)]  # secret (3 * 2 + 2) % 10 = 8: guesses 4, 7, 8
    assert [m["content"] for m in secret_8["completion"]] == ["4", "higher", "7", "higher", "8"]
    assert secret_8["metrics"] == {**secret_8["metrics"], "solved": 1.0, "guesses": 3.0, "finalized": 1.0}
    assert all(r["reward"] == 1.0 for r in records.values())


@needs_venv
def test_a_stop_hook_ends_the_rollout_and_the_env_sees_it_terminated(tmp_path):
    run = tmp_path / "run"
    replies = {0: "3", 1: "I give up"}
    with ScriptedServer(reply=lambda request: replies[sum(m["role"] == "assistant" for m in request["messages"])]) as server:
        result = vf_eval("vf_guess", server, run, "-n", "1", "-r", "1")
    assert result.returncode == 0, result.stderr
    [record] = by_example(run).values()  # secret 2: "3" → "lower", then the model gives up
    assert [m["content"] for m in record["completion"]] == ["3", "lower", "I give up"]
    assert record["error"] is None and record["reward"] == 0.0 and record["metrics"]["guesses"] == 2.0
    assert len(server.requests) == 2


@needs_venv
def test_an_env_that_raises_fails_its_rollout_not_the_run(tmp_path):
    run = tmp_path / "run"
    with ScriptedServer(reply="boom") as server:
        result = vf_eval("vf_guess", server, run, "-n", "2", "-r", "1")
    assert result.returncode == 0, result.stderr
    for record in by_example(run).values():
        assert record["reward"] is None and record["error"]["kind"] == "environment"
        assert "RuntimeError: the game broke" in record["error"]["message"]


@needs_venv
def test_a_tool_taskset_offers_its_toolset_and_scores_the_state_the_tools_left(tmp_path):
    with ScriptedServer(reply=counter_player()) as server:
        result = vf_eval("vf_counter", server, tmp_path / "right", "-n", "-1", "-r", "1")
        tools = server.requests[0]["tools"]
    assert result.returncode == 0, result.stderr
    assert {t["function"]["name"]: sorted(t["function"]["parameters"]["properties"]) for t in tools} == {"counter_add": ["amount"], "counter_read": []}
    assert "Add `amount` to the counter" in tools[0]["function"]["description"]
    record = by_example(tmp_path / "right")[(1, 0)]  # target 6: add 4, add 2, read
    assert [m.get("content") for m in record["completion"] if m["role"] == "tool"] == ["total: 4", "total: 6", "6"]
    assert record["reward"] == 1.0
    assert record["metrics"] == {**record["metrics"], "on_target": 1.0, "tool_results": 3.0, "calls_counter_add": 2.0}
    with ScriptedServer(reply=counter_player(overshoot=1)) as server:
        assert vf_eval("vf_counter", server, tmp_path / "wrong", "-n", "1", "-r", "1").returncode == 0
    [record] = by_example(tmp_path / "wrong").values()
    assert record["reward"] == 0.0 and record["metrics"]["on_target"] == 0.0


@needs_venv
def test_resume_completes_a_cut_run_without_rewriting_it(tmp_path):
    run = tmp_path / "run"
    with ScriptedServer(reply=bisecting_guesser) as server:
        assert vf_eval("vf_guess", server, run, "-n", "-1", "-r", "2").returncode == 0
        lines = (run / "results.jsonl").read_bytes().splitlines(keepends=True)
        (run / "results.jsonl").write_bytes(b"".join(lines[:3]))
        result = in_verifiers_venv("eval", "--resume", str(run), "-b", server.base_url)
        requests_on_resume = len(server.requests)
    assert result.returncode == 0, result.stderr
    records = jsonl(run / "results.jsonl")
    assert [json.dumps(r) for r in records[:3]] == [json.dumps(json.loads(line)) for line in lines[:3]]
    assert sorted((r["example_id"], r["rollout"]) for r in records) == [(f"secret-{i}", r) for i in range(4) for r in range(2)]
    assert all(r["reward"] == 1.0 for r in records) and requests_on_resume > 0
    assert read_metadata(run)["status"] == "completed"


@needs_venv
def test_the_report_of_a_verifiers_run_shows_its_metrics(tmp_path):
    run = tmp_path / "run"
    with ScriptedServer(reply=counter_player()) as server:
        assert vf_eval("vf_counter", server, run, "-n", "2", "-r", "1").returncode == 0
    result = invoke("view", str(run))  # lmgym's own venv reads what the verifiers venv wrote
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text()
    assert "on_target" in html and "counter_add" in html


@needs_venv
def test_what_the_adapter_cannot_run_is_named_at_load_time(tmp_path):
    # The smoke test of the real command: `python -m lmgym` as its own process of the venv.
    result = in_a_verifiers_venv_process("eval", "vf:vf_boxed", "-b", "http://127.0.0.1:9/v1", "-m", "m", "-o", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "BoxedTask.NEEDS_CONTAINER" in message and "@vf.intercept hooks (redact)" in message
    assert "@vf.reward tests_pass (it needs a runtime)" in message and "Traceback" not in message
    assert not (tmp_path / "run").exists()
    unknown = in_verifiers_venv("eval", "vf:no_such_taskset", "-b", "http://127.0.0.1:9/v1", "-m", "m")
    assert unknown.returncode == 2 and "taskset 'no_such_taskset' not found" in " ".join(unknown.stderr.split())


@needs_venv
def test_training_steps_on_a_verifiers_taskset_use_its_rewards(tmp_path):
    config = tmp_path / "vf-arith.toml"
    config.write_text(
        '[model]\nname = "tiny-llama"\n[env]\nname = "vf:vf_arith"\nargs = {num_tasks = 8}\n'
        "[sampling]\nmax_tokens = 4\n[algorithm]\ngroup_size = 4\nprompts_per_step = 2\n"
        "[trainer]\nmax_steps = 2\nmicro_batch_size = 8\n[eval]\nevery = 0\n[sft]\nwarm_start = false\n"
    )
    result = in_verifiers_venv("train", str(config), f"logging.output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    steps = jsonl(tmp_path / "out" / "metrics.jsonl")
    assert [s["step"] for s in steps if "reward" in s] == [1, 2]
    samples = jsonl(tmp_path / "out" / "samples.jsonl")
    assert samples and all({"correct", "brief", "reply_chars"} <= set(s["metrics"]) for s in samples)
    for sample in samples:
        assert sample["reward"] == sample["metrics"]["correct"] + 0.5 * sample["metrics"]["brief"]
