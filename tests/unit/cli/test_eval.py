"""`lmgym eval` end to end: the real CLI, the scripted server on loopback. The command runs
in this process, except its smoke test and what needs a process: Ctrl-C, and a second
process holding the run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from cli_runner import default_sigint, invoke, process_env, run_process
from paths import FIXTURES

from lmgym import rundir
from lmgym.embedded import free_port
from lmgym.testing import ScriptedServer, last_user_text

SECRET = "sk-test-secret-0123456789"


def solve(request) -> str:
    a, b = map(int, re.findall(r"\d+", last_user_text(request)))
    return f"<answer>{a + b}</answer>"


def slow_solve(request) -> str:
    time.sleep(0.15)
    return solve(request)


def lmgym_eval(*args: str, cwd: Path = FIXTURES):
    """`lmgym eval ARGS` in this process, from the folder of the local test environments."""
    return invoke("eval", *args, cwd=cwd, env={"OPENAI_API_KEY": SECRET, "COLUMNS": "200"})


def read_records(run_dir: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run_dir / "results.jsonl").read_bytes().splitlines()]


def read_metadata(run_dir: Path) -> dict:
    return orjson.loads((run_dir / "metadata.json").read_bytes())


@pytest.fixture
def server():
    with ScriptedServer(reply=solve) as s:
        yield s


def test_eval_streams_results_and_summarises(server, tmp_path):
    """The smoke test of `lmgym eval` as its own process."""
    run = tmp_path / "run"
    result = run_process("eval", "sum-env", "-m", "scripted", "-b", server.base_url, "-n", "4", "-r", "3", "-c", "8", "-o", str(run), "-S", '{"temperature": 0.3}',
                         cwd=FIXTURES, env={"OPENAI_API_KEY": SECRET}, timeout=120)
    assert result.returncode == 0, result.stderr
    records = read_records(run)
    assert len(records) == 12
    assert {(r["example_id"], r["rollout"]) for r in records} == {(i, j) for i in range(4) for j in range(3)}
    assert all(r["reward"] == 1.0 and r["metrics"] == {"correct": 1.0, "format_reward": 1.0} for r in records)
    assert all(r["error"] is None and r["usage"]["requests"] == 1 for r in records)
    summary = read_metadata(run)["summary"]
    assert summary["reward_mean"] == 1.0 and summary["pass_at_k"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert summary["errors"] == {} and summary["completion_tokens"] == 12
    assert server.requests[0]["temperature"] == 0.3
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "Answer in <answer></answer> tags."}
    assert "Evaluation summary" in result.stdout and "pass@3 (reward ≥ 1)" in result.stdout
    for path in run.iterdir():  # the key is never written to disk
        assert SECRET not in path.read_text()


def test_transient_faults_are_retried_and_do_not_fail_rollouts(server, tmp_path):
    # the malformed body first (backoff: its first retry waits 0.25-0.5 s; the fourth would wait 2-4 s), then
    # faults that name their own short wait
    server.malformed_next(1)
    server.fail_next(500, times=2, retry_after=0.05)
    server.fail_next(429, times=1, retry_after=0.1)
    run = tmp_path / "run"
    result = lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "3", "-r", "1", "-c", "1", "-o", str(run))
    assert result.returncode == 0, result.stderr
    assert [r["error"] for r in read_records(run)] == [None] * 3
    assert len(server.requests) == 7


def test_persistent_errors_are_recorded_on_rollouts_not_the_run(server, tmp_path):
    server.fail_next(503, times=2)  # with --max-retries 1 the first rollout fails for good
    run = tmp_path / "run"
    result = lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "3", "-r", "1", "-c", "1", "--max-retries", "1", "-o", str(run))
    assert result.returncode == 0, result.stderr
    records = sorted(read_records(run), key=lambda r: r["example_id"])
    assert records[0]["error"]["kind"] == "server" and records[0]["reward"] is None
    assert [r["reward"] for r in records[1:]] == [1.0, 1.0]
    summary = read_metadata(run)["summary"]
    assert summary["errors"] == {"server": 1} and summary["scored"] == 2
    assert summary["first_errors"]["server"] == records[0]["error"]["message"]
    stderr = "".join(result.stderr.split())  # rich wraps long lines, a long path even inside a word
    assert "".join(f"first server error: {records[0]['error']['message']}".split()) in stderr
    assert "".join(f"every error is in {run / 'results.jsonl'}".split()) in stderr


def test_raising_reward_function_marks_the_rollout(server, tmp_path):
    run = tmp_path / "run"
    result = lmgym_eval("sum-env", "-a", '{"fail_on": 1}', "-m", "s", "-b", server.base_url, "-n", "2", "-r", "1", "-o", str(run))
    assert result.returncode == 0, result.stderr
    failed = next(r for r in read_records(run) if r["example_id"] == 1)
    assert failed["reward"] is None
    assert failed["error"]["kind"] == "reward" and "deliberate failure" in failed["error"]["message"]


def test_empty_model_content_is_recorded(tmp_path):
    with ScriptedServer(reply="") as server:
        run = tmp_path / "run"
        result = lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "2", "-r", "1", "-o", str(run))
    assert result.returncode == 0, result.stderr
    assert [r["error"]["kind"] for r in read_records(run)] == ["empty_response"] * 2


def test_rejected_key_stops_the_run_with_one_message(tmp_path):
    with ScriptedServer(reply=solve, api_key="sk-another") as server:
        run = tmp_path / "run"
        result = lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "4", "-r", "2", "-o", str(run))
    assert result.returncode == 1
    assert result.stderr.count("rejected the API key") == 1
    assert SECRET not in result.stderr + result.stdout
    assert read_metadata(run)["status"] == "failed"


def test_rejected_request_without_a_key_says_the_variable_is_unset(tmp_path):
    with ScriptedServer(reply=solve, api_key="sk-another") as server:
        result = lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "1", "-r", "1", "-k", "MY_UNSET_KEY",
                            "-o", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "the environment variable MY_UNSET_KEY is unset" in " ".join(result.stderr.split())


def test_unreachable_server_is_one_clear_message(tmp_path):
    run = tmp_path / "run"
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = lmgym_eval("sum-env", "-m", "s", "-b", url, "-n", "3", "--max-retries", "1", "-o", str(run))
    assert result.returncode == 1
    assert result.stderr.count("cannot reach the model server") == 1
    assert "--resume" in result.stderr


def test_ctrl_c_leaves_valid_jsonl_and_resume_completes_it(tmp_path):
    run = tmp_path / "run"
    delay = {"s": 0.15}  # 80 slow rollouts, 2 at a time: ~6 s to interrupt them even on a busy machine

    def slow(request):
        time.sleep(delay["s"])
        return solve(request)

    with ScriptedServer(reply=slow) as server:
        process = subprocess.Popen(
            [sys.executable, "-m", "lmgym", "eval", "sum-env", "-m", "s", "-b", server.base_url,
             "-a", '{"num_examples": 40}', "-n", "40", "-r", "2", "-c", "2", "-o", str(run)],
            cwd=FIXTURES, env=process_env(OPENAI_API_KEY=SECRET), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=default_sigint,
        )
        results = run / "results.jsonl"
        deadline = time.monotonic() + 60
        while not (results.exists() and len(results.read_bytes().splitlines()) >= 3):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert "--resume" in stderr
        partial = read_records(run)  # every line parses
        assert 3 <= len(partial) < 80
        assert read_metadata(run)["status"] == "interrupted"

        delay["s"] = 0.0
        result = lmgym_eval("--resume", str(run), "-b", server.base_url)
    assert result.returncode == 0, result.stderr
    records = read_records(run)
    keys = [(r["example_id"], r["rollout"]) for r in records]
    assert len(keys) == len(set(keys)) == 80
    assert records[: len(partial)] == partial  # nothing rewritten or lost
    metadata = read_metadata(run)
    assert metadata["status"] == "completed" and metadata["summary"]["rollouts"] == 80


def test_resume_drops_a_torn_last_line(server, tmp_path):
    run = tmp_path / "run"
    assert lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "2", "-r", "2", "-o", str(run)).returncode == 0
    lines = (run / "results.jsonl").read_bytes().splitlines(keepends=True)
    (run / "results.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:20])
    result = lmgym_eval("--resume", str(run))
    assert result.returncode == 0, result.stderr
    keys = sorted((r["example_id"], r["rollout"]) for r in read_records(run))
    assert keys == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_resume_refuses_changed_settings(server, tmp_path):
    run = tmp_path / "run"
    assert lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "1", "-r", "1", "-o", str(run)).returncode == 0
    result = lmgym_eval("--resume", str(run), "-r", "5")
    assert result.returncode == 2
    assert "rollouts_per_example=5" in result.stderr


def test_invalid_json_names_the_flag_and_position():
    result = lmgym_eval("sum-env", "-a", '{"num_examples": 3,}')
    assert result.returncode == 2
    assert "-a/--env-args" in result.stderr and "column 20" in result.stderr
    result = lmgym_eval("sum-env", "-S", "[1, 2]")
    assert result.returncode == 2 and "-S/--sampling-args must be a JSON object" in result.stderr


def test_unknown_environment_lists_the_known_ones():
    result = lmgym_eval("no-such-env")
    assert result.returncode == 2
    assert "unknown environment 'no-such-env'" in result.stderr and "sum-env" in result.stderr


def test_bad_environment_arguments_are_named(server):
    result = lmgym_eval("sum-env", "-a", '{"num_exemples": 3}', "-b", server.base_url)
    assert result.returncode == 2
    assert "num_exemples" in result.stderr and "num_examples" in result.stderr
    result = lmgym_eval("sum-env", "-a", '{"num_examples": "two"}', "-b", server.base_url)
    assert result.returncode == 2 and isinstance(result.exception, SystemExit)  # one line, no traceback
    assert "argument 'num_examples' must be int, got 'two'" in " ".join(result.stderr.split())


def test_list_shows_local_and_bundled_environments():
    """The smoke test of `lmgym list` as its own process."""
    result = run_process("list", cwd=FIXTURES, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sum-env" in result.stdout and "Add two numbers" in result.stdout


def test_output_dir_of_another_run_is_refused_without_resume(server, tmp_path):
    run = tmp_path / "run"
    assert lmgym_eval("sum-env", "-m", "a", "-b", server.base_url, "-n", "2", "-r", "1", "-o", str(run)).returncode == 0
    before = (run / "results.jsonl").read_bytes(), (run / "metadata.json").read_bytes()
    result = lmgym_eval("sum-env", "-m", "b", "-b", server.base_url, "-n", "2", "-r", "1", "-o", str(run))
    message = "".join(result.stderr.split())  # rich wraps long lines, a long path even inside a word
    assert result.returncode == 2
    assert "alreadyholdsfilesofanotherrun" in message and f"--resume{run}" in message
    assert ((run / "results.jsonl").read_bytes(), (run / "metadata.json").read_bytes()) == before


def test_resume_of_a_run_a_live_process_holds_is_refused(tmp_path):
    run = tmp_path / "run"
    with ScriptedServer(reply=slow_solve) as server:
        first = subprocess.Popen(
            [sys.executable, "-m", "lmgym", "eval", "sum-env", "-m", "s", "-b", server.base_url,
             "-n", "8", "-r", "2", "-c", "1", "-o", str(run)],
            cwd=FIXTURES, env=process_env(OPENAI_API_KEY=SECRET), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not (run / "results.jsonl").exists() or not (run / "results.jsonl").read_bytes():
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.05)
            second = lmgym_eval("--resume", str(run))
            message = " ".join(second.stderr.split())
            assert second.returncode == 2
            assert "in use by another lmgym process" in message and f"pid {first.pid}" in message
        finally:
            first.communicate(timeout=60)
    assert first.returncode == 0
    keys = [(r["example_id"], r["rollout"]) for r in read_records(run)]
    assert len(keys) == len(set(keys)) == 16


class StoppedClock(datetime):
    """A clock that never leaves one second: every run of a sweep starts in it."""

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5)


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir, "datetime", StoppedClock)
    with ScriptedServer(reply="<answer>0</answer>") as server:
        for _ in range(2):
            result = invoke("eval", "arithmetic,reverse-text", "-m", "org/m", "-b", server.base_url, "-n", "2", "-r", "1",
                            cwd=tmp_path, env={"OPENAI_API_KEY": SECRET, "COLUMNS": "200"})
            assert result.returncode == 0, result.stderr
    name = "arithmetic+reverse-text--org_m--20260102-030405"  # a group's name without its comma
    runs = sorted((tmp_path / "runs" / "eval").iterdir())
    assert [run.name for run in runs] == [name, f"{name}-2"]
    for run in runs:  # each run's own rollouts, none of the other's
        keys = [(r["example_id"], r["rollout"]) for r in read_records(run)]
        assert len(keys) == len(set(keys)) == 4


def test_a_run_that_cannot_start_leaves_no_directory(tmp_path):
    result = lmgym_eval("no-such-env", cwd=tmp_path)
    assert result.returncode == 2
    assert not (tmp_path / "runs").exists()


def test_asking_for_more_examples_than_there_are_says_how_many_ran(server, tmp_path):
    result = lmgym_eval("sum-env", "-m", "s", "-b", server.base_url, "-n", "500", "-r", "1", "-o", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    ran = len(read_records(tmp_path / "run"))
    assert ran < 500 and f"note: {ran} examples, not 500" in " ".join(result.stderr.split())
