"""MCPToolEnv against a real MCP server process (tests/fixtures/mcp_server.py) over stdio."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
import pytest_asyncio
from paths import FIXTURES
from scripted import raw_tool_call

from lmgym import OpenAIClient
from lmgym.envs.mcp import MCPServer, MCPToolEnv, ToolServerError
from lmgym.errors import UsageError
from lmgym.testing import ScriptedServer, tool_call

SERVER_SCRIPT = str(FIXTURES / "mcp_server.py")
# Not an MCP server: writes its pid to argv[1], then waits for stdin to close.
SILENT_SERVER = "import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); sys.stdin.read()"
shared_loop = pytest.mark.asyncio(loop_scope="module")  # the tests on the one shared server


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


def notes_server(name: str = "notes", *extra_args: str, **kwargs) -> MCPServer:
    return MCPServer(name, sys.executable, [SERVER_SCRIPT, *extra_args], **kwargs)


def make_env(*servers, **kwargs) -> MCPToolEnv:
    return MCPToolEnv(
        eval_dataset=[{"question": "What colour is the sky?", "answer": "blue"}], servers=list(servers), **kwargs
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env():
    """One server for the module: it starts in about a second."""
    env = make_env(notes_server(), tools=[shout], tool_timeout=0.5)
    async with env.running():
        yield env


async def respond(env, *calls):
    state: dict = {}
    replies = await env.env_response([{"role": "assistant", "content": None, "tool_calls": list(calls)}], state)
    return [r["content"] for r in replies], state


@shared_loop
async def test_start_lists_the_servers_tools_as_openai_schemas(env):
    by_name = {t["function"]["name"]: t["function"] for t in env.tools}
    assert {"shout", "put", "get", "add", "fail", "sleep"} <= set(by_name)  # Python tools first
    assert by_name["add"]["description"] == "Add two integers."
    parameters = by_name["add"]["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["a", "b"]
    assert parameters["properties"]["a"]["type"] == "integer"
    assert by_name["picture"]["parameters"]["properties"] == {}
    assert set(env.toolbox) == set(by_name)
    assert {"tool_calls", "tool_errors", "calls_shout", "calls_put", "calls_get"} <= set(env.rubric.names)


@shared_loop
async def test_calls_share_one_server_and_render_its_content(env):
    replies, state = await respond(env, raw_tool_call("put", {"key": "k1", "value": "v1"}))
    assert replies == ["stored k1"]
    replies, _ = await respond(
        env,
        raw_tool_call("get", {"key": "k1"}, "a"),
        raw_tool_call("add", {"a": 2, "b": 3}, "b"),
        raw_tool_call("picture", {}, "c"),
        raw_tool_call("shout", {"text": "hi"}, "d"),
    )
    assert replies == ["v1", "5", "a red dot\n[image image/png, 8 bytes]", "HI"]
    assert state["calls"] == {"put": 1} and state.get("tool_errors", 0) == 0


@shared_loop
async def test_bad_calls_and_tool_failures_come_back_as_tool_messages(env):
    cases = {
        "wrong type": (raw_tool_call("add", {"a": "two", "b": 3}), "argument 'a': 'two' is not of type 'integer'"),
        "missing": (raw_tool_call("add", {"a": 1}), "arguments: 'b' is a required property"),
        "array": (raw_tool_call("add", "[1, 2]"), "arguments must be a JSON object, got list"),
        "not json": (raw_tool_call("add", "{a: 1"), "not valid JSON"),
        "unknown tool": (raw_tool_call("nope", {}), "unknown tool 'nope'"),
        "tool error": (
            raw_tool_call("fail", {"message": "disk on fire"}),
            "fail raised MCPToolError: Error executing tool fail: disk on fire",
        ),
        "timeout": (raw_tool_call("sleep", {"seconds": 5}), "sleep did not return within 0.5s"),
    }
    for label, (bad, expected) in cases.items():
        [reply], state = await respond(env, bad)
        assert reply.startswith("Error: ") and expected in reply, (label, reply)
        assert state["tool_errors"] == 1, label
    replies, _ = await respond(env, raw_tool_call("add", {"a": 1, "b": 1}))  # a timed-out call leaves the session usable
    assert replies == ["2"]


def notes_model(request) -> dict | str:
    """Stores the answer, reads it back, then says it."""
    tool_results = [m["content"] for m in request["messages"] if m["role"] == "tool"]
    if not tool_results:
        return {"content": None, "tool_calls": [tool_call("put", {"key": "sky", "value": "blue"})]}
    if len(tool_results) == 1:
        return {"content": None, "tool_calls": [tool_call("get", {"key": "sky"})]}
    return tool_results[-1]


@shared_loop
async def test_rollout_end_to_end_over_http(env):
    env.rubric.add(lambda completion, answer: float(completion[-1]["content"] == answer), weight=1.0)
    with ScriptedServer(reply=notes_model) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "scripted", env.eval_dataset[0])
        await client.aclose()
    await env.score_group([rollout])
    assert rollout.error is None and len(rollout.turns) == 3
    assert [m["content"] for t in rollout.turns for m in t.env_messages] == ["stored sky", "blue"]
    assert {t["function"]["name"] for t in server.requests[0]["tools"]} == set(env.toolbox)
    assert rollout.reward == 1.0
    assert (
        rollout.metrics["calls_put"] == 1 and rollout.metrics["calls_get"] == 1 and rollout.metrics["tool_errors"] == 0
    )


async def test_stop_leaves_no_server_process_and_the_server_sees_only_its_env(monkeypatch):
    monkeypatch.setenv("LMGYM_TEST_SECRET", "hunter2")
    env = make_env(notes_server(env={"NOTES_MODE": "test"}))
    async with env.running():
        replies, _ = await respond(
            env,
            raw_tool_call("pid", {}),
            raw_tool_call("environment", {"name": "NOTES_MODE"}, "b"),
            raw_tool_call("environment", {"name": "LMGYM_TEST_SECRET"}, "c"),
        )
        pid = int(replies[0])
        assert replies[1:] == ["test", "<unset>"]
        assert alive(pid)
    assert not alive(pid)
    assert env.toolbox == {} and env.tools == []
    await env.stop()  # a second stop is harmless


async def test_a_server_that_cannot_start_names_its_command_and_quotes_its_stderr():
    with pytest.raises(
        ToolServerError, match=r"could not start MCP server 'broken' \(`/no/such/server --flag`\): .*No such file"
    ):
        await make_env(MCPServer("broken", "/no/such/server", ["--flag"])).start()
    env = make_env(notes_server("crashing", "--crash"))
    expected = r"(?s)could not start MCP server 'crashing'.*--crash.*stderr ends with:\nmcp_server.py: refusing"
    with pytest.raises(ToolServerError, match=expected):
        await env.start()
    assert env.toolbox == {} and env._owner is None


async def test_a_server_that_never_answers_times_out_and_a_cancelled_start_leaves_nothing(tmp_path):
    pid_file = tmp_path / "pid"
    silent = MCPServer("silent", sys.executable, ["-c", SILENT_SERVER, str(pid_file)], start_timeout=0.3)
    with pytest.raises(ToolServerError, match=r"MCP server 'silent' .* did not finish the MCP handshake within 0.3s"):
        await make_env(silent).start()
    assert not alive(int(pid_file.read_text()))
    pid_file.unlink()
    env = make_env(MCPServer("silent", sys.executable, ["-c", SILENT_SERVER, str(pid_file)]))
    starting = asyncio.create_task(env.start())
    while not (pid_file.exists() and pid_file.read_text()):
        await asyncio.sleep(0.02)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not alive(int(pid_file.read_text())) and env._owner is None


async def test_two_servers_with_one_tool_name_are_refused():
    env = make_env(notes_server("first"), notes_server("second"))
    with pytest.raises(
        ToolServerError,
        match=r"MCP server 'second' .* offers tool 'put', which is already offered by MCP server 'first'",
    ):
        await env.start()
    assert env.toolbox == {} and env._owner is None


async def test_a_server_dying_mid_run_stops_the_rollout():
    env = make_env(notes_server())
    with ScriptedServer(reply=lambda request: {"content": None, "tool_calls": [tool_call("crash", {})]}) as server:
        client = OpenAIClient(server.base_url)
        async with env.running():
            with pytest.raises(ToolServerError, match="MCP server 'notes' .* closed the connection mid-run"):
                await env.rollout(client, "scripted", env.eval_dataset[0])
        await client.aclose()


async def test_rollout_before_start_says_how_to_start():
    env = make_env(notes_server())
    expected = r"has not started its MCP servers: run rollouts inside `async with env.running\(\):`"
    with pytest.raises(ToolServerError, match=expected):
        await env.rollout(None, "scripted", env.eval_dataset[0])


def test_server_configs_are_checked_when_the_env_is_built():
    server = {"name": "notes", "command": sys.executable, "args": [SERVER_SCRIPT]}
    assert make_env(server).servers == [MCPServer("notes", sys.executable, [SERVER_SCRIPT])]
    with pytest.raises(UsageError, match=r"servers\[0\]: unknown key\(s\) \['cmd'\]"):
        make_env({"name": "x", "cmd": "python"})
    with pytest.raises(UsageError, match="`args` must be a list of strings"):
        make_env({"name": "x", "command": "python", "args": "server.py"})
    with pytest.raises(UsageError, match="names must be unique"):
        make_env(server, server)
    with pytest.raises(UsageError, match="at least one server"):
        make_env()
