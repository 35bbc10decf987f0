"""OpenEnv both ways, with the real `openenv-core` package in its own venv (`make openenv`):
its servers (its own `create_fastapi_app`, two environments written for these tests in
tests/fixtures/openenv_server.py) as lmgym environments played by scripted models, and
`lmgym serve` played by its own client (`GenericEnvClient`, tests/fixtures/openenv_client.py)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import assert_one_error, invoke
from paths import FIXTURES
from scripted import run_scripted

from lmgym.embedded import free_port
from lmgym.envs import OpenEnvEnv
from lmgym.eval.results import read_metadata
from lmgym.registry import load_environment
from lmgym.testing import ScriptedServer, tool_call

OPENENV_PYTHON = Path(os.environ.get("LMGYM_OPENENV_PYTHON", Path.home() / ".cache" / "lmgym" / "openenv-venv" / "bin" / "python"))
pytestmark = pytest.mark.skipif(not OPENENV_PYTHON.exists(), reason=f"no OpenEnv venv at {OPENENV_PYTHON}: make openenv")


def start_logged(command: list[str], log: Path, stdin=None) -> subprocess.Popen:
    """A server process whose output goes to `log`: an unread pipe would fill and block it
    (openenv-core's server logs a traceback for some closed sessions)."""
    with log.open("w") as out:
        return subprocess.Popen(command, stdin=stdin, stdout=out, stderr=subprocess.STDOUT, text=True)


def start_servers(command, logs: Path, *names: str) -> dict[str, tuple[subprocess.Popen, str]]:
    """A server process per name, `command(name, port)`, started side by side (each imports
    for seconds) and waited for: name -> (process, its root URL)."""
    started = {}
    for name in names:
        port = free_port()
        started[name] = (start_logged(command(name, port), logs / f"{name}.log"), f"http://127.0.0.1:{port}")
    for name, (process, url) in started.items():
        wait_for(process, int(url.rsplit(":", 1)[1]), logs / f"{name}.log")
    return started


@pytest.fixture(scope="module")
def openenv_servers(tmp_path_factory):
    """openenv-core's server of the two test environments, one process serving both (and
    playing OpenEnv's client on request: `played`)."""
    ports = {"guess": free_port(), "walk": free_port()}
    command = [str(OPENENV_PYTHON), str(FIXTURES / "openenv_server.py"), *(str(x) for pair in ports.items() for x in pair)]
    log = tmp_path_factory.mktemp("openenv") / "server.log"
    process = start_logged(command, log, stdin=subprocess.PIPE)
    for port in ports.values():
        wait_for(process, port, log)
    yield {"log": log, "process": process, **{name: f"http://127.0.0.1:{port}" for name, port in ports.items()}}
    process.kill()
    process.wait()


@pytest.fixture
def guess_url(openenv_servers):
    return openenv_servers["guess"]


@pytest.fixture
def walk_url(openenv_servers):
    return openenv_servers["walk"]


def bisecting_player(request):
    """Guesses a digit by halving the range the feedback leaves."""
    low, high = 0, 9
    for message in request["messages"]:
        if message["role"] == "assistant":
            guess = int(message["content"])
        elif message["role"] == "user" and message["content"] in ("higher", "lower"):
            low, high = (guess + 1, high) if message["content"] == "higher" else (low, guess - 1)
    return str((low + high) // 2)


def walker(request):
    """Reads position and target from the last observation and steps towards the target."""
    last = json.loads([m for m in request["messages"] if m["role"] in ("user", "tool")][-1]["content"])
    (x, y), (tx, ty) = last["position"], last["target"]
    if (x, y) == (tx, ty):
        return "arrived"
    sign = lambda d: (d > 0) - (d < 0)  # noqa: E731
    turn = sum(m["role"] == "assistant" for m in request["messages"])
    return {"content": None, "tool_calls": [tool_call("act", {"dx": sign(tx - x), "dy": sign(ty - y)}, f"c{turn}")]}


async def test_a_text_action_episode_is_played_to_the_end_and_scored_with_the_servers_reward(guess_url):
    env = OpenEnvEnv(guess_url, num_eval_examples=4)
    rollout, server = await run_scripted(env, bisecting_player, env.eval_dataset[3])
    secret = env.eval_dataset[3].info["seed"] % 10
    assert rollout.error is None and rollout.reward == 1.0
    assert rollout.example.prompt[-1]["content"].startswith("I hid a digit")  # the reset's observation is the prompt
    assert rollout.completion[-1]["content"] == "correct" and rollout.turns[-1].assistant["content"] == str(secret)
    assert server.app.requests[0].get("tools") is None  # a one-string-field action is the reply's text


async def test_a_two_field_action_is_the_act_tool_and_its_schema_reaches_the_model(walk_url):
    env = OpenEnvEnv(walk_url, num_eval_examples=5)
    example = env.eval_dataset[4]  # reset seed 1_000_004: the target is (2, 1), two steps away
    rollout, server = await run_scripted(env, walker, example)
    assert rollout.error is None and rollout.reward == 1.0, rollout.error
    [tool] = server.app.requests[0]["tools"]
    assert tool["function"]["name"] == "act" and set(tool["function"]["parameters"]["properties"]) == {"dx", "dy"}
    assert [m["role"] for m in rollout.completion].count("tool") == 2
    assert json.loads(rollout.completion[-1]["content"]) == {"position": [2, 1], "target": [2, 1]}


async def test_an_action_the_server_refuses_is_told_to_the_model_not_fatal(walk_url):
    env = OpenEnvEnv(walk_url, num_eval_examples=1)
    replies = iter([{"content": None, "tool_calls": [tool_call("act", {"dx": 5, "dy": 0}, "c1")]}, "I give up"])
    rollout, _ = await run_scripted(env, lambda request: next(replies))
    assert rollout.error is None and rollout.reward == 0.0
    assert re.search(r"error: .*dx", rollout.completion[1]["content"]), rollout.completion


def test_lmgym_eval_of_an_openenv_server_streams_scored_results(openenv_servers, tmp_path):
    with ScriptedServer(reply=bisecting_player) as model:
        result = invoke("eval", "openenv", "-a", json.dumps({"url": openenv_servers["guess"], "num_eval_examples": 10}),
                        "-b", model.base_url, "-m", "scripted", "-n", "10", "-r", "1", "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    summary = read_metadata(tmp_path / "run")["summary"]
    assert summary["rollouts"] == 10 and summary["reward_mean"] == 1.0 and summary["errors"] == {}
    # each episode's session was closed as the server expects: openenv-core logs a traceback
    # for a client that closes its end while the server closes the session
    assert "Traceback" not in openenv_servers["log"].read_text()


def test_an_unreachable_server_stops_the_run_before_any_rollout(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with ScriptedServer(reply="1") as model:
        result = invoke("eval", "openenv", "-a", json.dumps({"url": url}), "-b", model.base_url, "-m", "scripted",
                        "-n", "2", "-r", "1", "-o", str(tmp_path / "run"))
    assert result.exit_code == 1 and "unreachable" in result.flat and url in result.flat, result.output
    assert not model.app.requests


def test_a_server_that_is_not_openenv_is_named(tmp_path):
    with ScriptedServer(reply="1") as model:
        url = model.base_url.removesuffix("/v1")
        result = invoke("eval", "openenv", "-a", json.dumps({"url": url}), "-b", model.base_url, "-m", "scripted",
                        "-n", "1", "-r", "1", "-o", str(tmp_path / "run"))
    assert result.exit_code == 1 and "does not answer as an OpenEnv server" in result.flat, result.output


def test_bad_arguments_name_the_argument():
    assert_one_error(invoke("eval", "openenv", "-a", '{"url": "http://x", "action": "voice"}'), "action", "voice")




# -- lmgym serve, played by OpenEnv's own client -------------------------------------------------


@pytest.fixture(scope="module")
def lmgym_served(tmp_path_factory):
    """`lmgym serve` of arithmetic and calculator, each its own process."""
    started = start_servers(lambda name, port: [sys.executable, "-m", "lmgym", "serve", name, "--port", str(port)],
                            tmp_path_factory.mktemp("served"), "arithmetic", "calculator")
    yield {name: url for name, (_, url) in started.items()}
    for process, _ in started.values():
        process.terminate()
        process.wait(timeout=30)


def wait_for(process, port: int, log: Path) -> None:
    """Until `process` listens on `port` (90 s at most); its output (`log`) if it exits first."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited: {log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{process.args} did not listen on port {port} in 90 s")


@pytest.fixture(scope="module")
def played(openenv_servers, lmgym_served, tmp_path_factory) -> dict:
    """OpenEnv's client's episodes of each served environment, played by the OpenEnv
    server's process (openenv's imports take seconds: one process pays them)."""
    outcome = tmp_path_factory.mktemp("played") / "outcome.json"
    process = openenv_servers["process"]
    process.stdin.write(" ".join([str(outcome), *(f"{k}={v}" for k, v in lmgym_served.items())]) + "\n")
    process.stdin.flush()
    deadline = time.monotonic() + 120
    while not outcome.exists():
        assert process.poll() is None and time.monotonic() < deadline, openenv_servers["log"].read_text()[-3000:]
        time.sleep(0.1)
    played = json.loads(outcome.read_text())
    assert "error" not in played, played["error"]
    return played


def test_openenvs_client_plays_a_served_lmgym_environment_and_gets_its_rubrics_reward(played):
    outcome = played["arithmetic"]
    example = load_environment("arithmetic").eval_dataset[3]
    assert outcome["first"]["messages"] == example.prompt and outcome["first"]["tools"] is None
    assert outcome["done"] is True and outcome["reward"] == pytest.approx(1.2)
    assert outcome["metrics"] == {"correct_answer": 1.0, "format_reward": 1.0}
    assert outcome["state"]["example_id"] == example.id and outcome["state"]["step_count"] == 1


def test_openenvs_client_calls_a_served_tool_and_the_environment_runs_it(played):
    outcome = played["calculator"]
    example = load_environment("calculator").eval_dataset[0]
    assert outcome["first"]["tools"][0]["function"]["name"] == "calculate"
    [result] = outcome["middle"]["messages"]
    assert result["role"] == "tool" and result["content"] == str(example.answer)
    assert outcome["reward"] == pytest.approx(1.2) and outcome["metrics"]["tool_calls"] == 1.0
