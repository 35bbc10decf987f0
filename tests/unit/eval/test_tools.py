"""`lmgym eval` of a tool environment: a run whose model never calls a tool says so
once, and the embedded llama.cpp server is started with its function-calling chat format
(its default one returns calls as text, so no tool would ever run)."""

from __future__ import annotations

import pytest
from cli_runner import invoke as lmgym

from lmgym.testing import ScriptedServer


def test_a_tool_environment_whose_model_never_calls_a_tool_says_so_once(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer(reply="<answer>42</answer>") as server:
        result = lmgym("eval", "calculator", "-n", "2", "-r", "1", "--base-url", server.base_url, "-m", "scripted",
                       "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert result.flat.count("offers tools, but no rollout called one") == 1
    with ScriptedServer(reply="<answer>42</answer>") as server:  # no tools: nothing to say
        result = lmgym("eval", "arithmetic", "-n", "2", "-r", "1", "--base-url", server.base_url, "-m", "scripted",
                       "-o", str(tmp_path / "run2"))
    assert result.exit_code == 0 and "no rollout called one" not in result.flat


@pytest.mark.llama
def test_lmgym_eval_of_a_tool_environment_on_the_embedded_model_runs_its_tool(tmp_path):
    import json

    forced = json.dumps({"max_tokens": 48, "tool_choice": {"type": "function", "function": {"name": "calculate"}}})
    result = lmgym("eval", "calculator", "-n", "1", "-r", "1", "-a", '{"max_turns": 1}', "-S", forced, "-o", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    [record] = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert record["metrics"]["tool_calls"] == 1, record
    assert "no rollout called one" not in result.flat
