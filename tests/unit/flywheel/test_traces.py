"""`lmgym traces`: recorded traffic into SFT rows and a replayable eval environment.

The fixture folder tests/fixtures/traces holds hand-built trace files in the proxy's
format: one of each kind of trace that must be kept or dropped (see the comments in
FIXTURE_KEPT), and a second file with a bad line and a torn last line.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from cli_runner import invoke, run_process
from paths import FIXTURES
from records import jsonl

from lmgym import errors
from lmgym.flywheel import traces as tr
from lmgym.testing import ScriptedServer, last_user_text, tool_call
from lmgym.types import Rollout, Turn

FIXTURES = FIXTURES / "traces"
ID = "{:032x}".format
# 1 plain, 3 a tool call, 4 a reply after a tool result, 9 text parts joined, 10 another model
FIXTURE_KEPT = [ID(1), ID(3), ID(4), ID(9), ID(10)]
FIXTURE_DROPPED = {"malformed": 2, "error": 2, "not_chat": 1, "empty": 1, "non_text": 1, "duplicate": 1}


def lmgym(*args: str, cwd: Path | None = None):
    """`lmgym ARGS` in this process, 200 columns wide."""
    return invoke(*args, cwd=cwd, env={"COLUMNS": "200", "OPENAI_API_KEY": "sk-test"})


def table_count(stdout: str, label: str) -> int:
    return int(re.search(rf"{re.escape(label)}\s*│\s*(\d+)", stdout).group(1))


def select(flt: tr.TraceFilter = tr.TraceFilter()) -> tuple[list[tr.Selected], tr.Counts]:
    counts = tr.Counts()
    return tr.select_traces(tr.read_traces(tr.trace_files([FIXTURES]), counts), flt, counts), counts


# --- reading and filtering ------------------------------------------------------------


def test_fixture_traces_are_kept_or_dropped_for_the_right_reason():
    selected, counts = select()
    assert [s.trace["id"] for s in selected] == FIXTURE_KEPT
    assert counts.files == 2 and counts.read == 13 and counts.kept == 5
    assert dict(counts.dropped) == FIXTURE_DROPPED
    by_id = {s.trace["id"]: s for s in selected}
    weather = by_id[ID(3)]
    assert weather.prompt[0] == {"role": "system", "content": "You help with weather."}  # developer -> system
    assert weather.completion["tool_calls"][0]["function"]["name"] == "get_weather" and weather.tools
    assert by_id[ID(4)].prompt[-1] == {"role": "tool", "content": "18 C, sunny", "tool_call_id": "call_1"}
    assert by_id[ID(9)].prompt == [{"role": "user", "content": "Say hi"}]  # text parts joined


def test_filters_by_session_model_date_and_finish_reason():
    def kept(**kwargs):
        selected, counts = select(tr.TraceFilter(**kwargs))
        return [s.trace["id"] for s in selected], counts

    ids, counts = kept(sessions=frozenset({"s2"}))
    assert ids == [ID(3), ID(4)] and counts.dropped["session"] == 4  # 1, its duplicate 2, 9, 10
    assert kept(models=frozenset({"gpt-b"}))[0] == [ID(10)]
    assert kept(models=frozenset({"gpt-a-2025"}))[0] == FIXTURE_KEPT[:4]  # the answering model counts too
    ids, counts = kept(until=tr.parse_when("2025-01-10", end=True))
    assert ids == [ID(1), ID(9)] and counts.dropped["date"] == 3
    assert kept(since=tr.parse_when("2025-02-01"))[0] == [ID(10)]
    assert kept(since=tr.parse_when("2025-01-11T00:00:00+00:00"), until=tr.parse_when("2025-01-11T14:00:00Z"))[0] == [ID(3), ID(4)]
    assert kept(finish_reasons=frozenset({"tool_calls", "length"}))[0] == [ID(3), ID(10)]
    ids, counts = kept(dedupe=False)
    assert ids == [ID(1), ID(2), *FIXTURE_KEPT[1:]] and "duplicate" not in counts.dropped


def test_parse_when():
    assert tr.parse_when("2025-01-10") == 1736467200.0
    assert tr.parse_when("2025-01-10", end=True) == pytest.approx(1736553600.0)  # the whole day
    assert tr.parse_when("2025-01-10T02:00:00+02:00") == 1736467200.0
    with pytest.raises(errors.UsageError, match="not an ISO date"):
        tr.parse_when("last tuesday")


def test_missing_paths_are_usage_errors(tmp_path):
    with pytest.raises(errors.UsageError, match="no such trace file"):
        tr.trace_files([tmp_path / "nope"])
    with pytest.raises(errors.UsageError, match="holds no traces-NNNNN.jsonl"):
        tr.trace_files([tmp_path])


# --- writing -----------------------------------------------------------------------------


def test_sft_jsonl_is_what_lmgym_sft_reads(tmp_path):
    """The smoke test of `lmgym traces` as its own process."""
    out = tmp_path / "sft.jsonl"
    result = run_process("traces", str(FIXTURES), "--to", "sft", "-o", str(out), timeout=120)
    assert result.returncode == 0, result.stderr
    for label, count in [("lines read", 13), ("dropped: malformed lines or fields", 2), ("dropped: HTTP errors and broken streams", 2),
                         ("dropped: duplicates", 1), ("kept", 5)]:
        assert table_count(result.stdout, label) == count
    assert f"lmgym sft CONFIG.toml --sft.data {out}" in result.stderr
    rows = jsonl(out)
    assert [r["trace_id"] for r in rows] == FIXTURE_KEPT
    assert rows[0]["prompt"] == [{"role": "user", "content": "Capital of France?"}]
    assert rows[0]["completion"] == [{"role": "assistant", "content": "Paris"}]
    assert rows[0]["session_id"] == "s1" and rows[0]["model"] == "gpt-a-2025" and rows[0]["tools"] is None
    assert rows[1]["completion"][0]["tool_calls"][0]["id"] == "call_1"
    assert json.loads(rows[1]["tools"])[0]["function"]["name"] == "get_weather"
    pytest.importorskip("torch")
    from lmgym.eval.results import read_jsonl
    from lmgym.train.sft import split_row

    assert [split_row(row, "row") for row in read_jsonl(out, live=False)][0] == (rows[0]["prompt"], rows[0]["completion"])


@pytest.mark.parametrize("name", ["dataset", "rows.parquet"])
def test_arrow_formats_read_back_the_same_messages(tmp_path, name):
    selected, _ = select()
    rows = [tr.sft_row(s) for s in selected]
    out = tr.save_rows(rows, tmp_path / name, tr.output_format(tmp_path / name))
    back = tr.load_rows(out)
    assert [r["prompt"] for r in back] == [r["prompt"] for r in rows]
    assert [r["completion"] for r in back] == [r["completion"] for r in rows]
    with pytest.raises(errors.UsageError, match="already exists"):
        tr.save_rows(rows, out, tr.output_format(out))
    tr.save_rows(rows[:1], out, tr.output_format(out), overwrite=True)
    assert len(tr.load_rows(out)) == 1


def test_cli_usage_errors(tmp_path):
    result = lmgym("traces", str(FIXTURES), "--to", "sft", "-o", str(tmp_path / "x.jsonl"), "--min-reward", "1")
    assert result.returncode == 2 and "--min-reward needs --rescore-env" in result.stderr
    result = lmgym("traces", str(FIXTURES), "--to", "sft", "-o", str(tmp_path / "x.jsonl"), "--session", "nobody")
    assert result.returncode == 1 and "nothing written" in result.stderr and not (tmp_path / "x.jsonl").exists()
    result = lmgym("traces", str(FIXTURES), "--to", "sft", "-o", str(tmp_path / "x.jsonl"), "--until", "soon")
    assert result.returncode == 2 and "not an ISO date" in result.stderr


# --- re-scoring ------------------------------------------------------------------------------

SHORT_ENV = '''"""Rewards short replies; needs no reference answer."""
from lmgym import Rubric, SingleTurnEnv


def short(completion) -> float:
    text = completion[-1]["content"] or ""
    if text == "hi":
        raise ValueError("no greetings")
    return 1.0 if len(text) <= 10 else 0.0


def load_environment():
    return SingleTurnEnv(eval_dataset=[{"question": "q", "answer": "a"}], rubric=Rubric([short]))
'''


def test_rescore_keeps_traces_above_the_threshold(tmp_path):
    (tmp_path / "environments" / "short_replies").mkdir(parents=True)
    (tmp_path / "environments" / "short_replies" / "short_replies.py").write_text(SHORT_ENV)
    out = tmp_path / "kept.jsonl"
    result = lmgym("traces", str(FIXTURES), "--to", "sft", "-o", str(out), "--rescore-env", "short-replies", "--min-reward", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "re-scoring failed" in result.stdout and "reward below --min-reward" in result.stdout
    rows = jsonl(out)
    # 4 is a long reply (0.0); 9 says "hi" (the function raises); 1, 3 (no text) and 10 are short
    assert [r["trace_id"] for r in rows] == [ID(1), ID(3), ID(10)]
    assert all(r["reward"] == 1.0 for r in rows)


def test_rescore_refuses_a_rubric_that_needs_the_answer(tmp_path):
    result = lmgym("traces", str(FIXTURES), "--to", "sft", "-o", str(tmp_path / "x.jsonl"), "--rescore-env", "reverse-digits", "--min-reward", "1")
    assert result.returncode == 2
    assert "exact_match, digit_accuracy need the reference `answer`" in result.stderr.replace("\n", " ")


# --- the env dataset and the `traces` environment -------------------------------------------------


def replay_reply(request):
    if request.get("tools") and request["messages"][-1]["role"] == "user":
        return {"content": None, "tool_calls": [tool_call("get_weather", {"city": "Oslo"}, call_id="other-id")]}
    return {"Capital of France?": "  Paris\n", "Say hi": "hello"}.get(last_user_text(request), "It is 18 degrees and sunny in Oslo.")


def test_env_dataset_replays_with_lmgym_eval(tmp_path):
    out = tmp_path / "replay"
    result = lmgym("traces", str(FIXTURES), "--to", "env", "-o", str(out), "--model", "gpt-a")
    assert result.returncode == 0, result.stderr
    assert "lmgym eval traces -a" in result.stderr
    run = tmp_path / "run"
    with ScriptedServer(replay_reply) as server:
        result = lmgym("eval", "traces", "-a", json.dumps({"path": str(out)}), "-m", "m", "-b", server.base_url, "-n", "-1", "-r", "1", "-o", str(run))
        assert result.returncode == 0, result.stderr
        # each prompt is offered the tools its recorded request offered
        offered = sorted((r["messages"][-1]["role"], bool(r.get("tools"))) for r in server.requests)
        assert offered == [("tool", True), ("user", False), ("user", False), ("user", True)]
    rewards = {r["example_id"]: r["reward"] for r in jsonl(run / "results.jsonl")}
    # whitespace does not matter; tool calls compare by name and arguments; "hello" is not "hi"
    assert rewards == {ID(1): 1.0, ID(3): 1.0, ID(4): 1.0, ID(9): 0.0}


def test_matches_recorded():
    info = {"tool_calls": json.dumps([tool_call("f", {"a": 1, "b": 2})])}
    assert tr.matches_recorded([{"role": "assistant", "content": None, "tool_calls": [tool_call("f", {"b": 2, "a": 1}, "x")]}], "", info) == 1.0
    assert tr.matches_recorded([{"role": "assistant", "content": None, "tool_calls": [tool_call("f", {"a": 2})]}], "", info) == 0.0
    assert tr.matches_recorded([{"role": "assistant", "content": "done"}], "", info) == 0.0
    assert tr.matches_recorded([{"role": "assistant", "content": " a  b "}], "a b", {}) == 1.0


def test_judge_grades_against_the_recorded_reply(tmp_path):
    selected, _ = select()
    path = tr.save_rows([tr.env_row(s) for s in selected], tmp_path / "env.jsonl", "jsonl")
    with ScriptedServer(lambda request: "Verdict: yes") as judge:
        env = tr.load_traces_environment(str(path), judge_model="judge", judge_base_url=judge.base_url)
        example = env.get_eval_examples(1)[0]
        rollout = Rollout(example=example, turns=[Turn(assistant={"role": "assistant", "content": "Lyon"})])
        asyncio.run(env.score_group([rollout]))
        asked = judge.requests[0]["messages"][-1]["content"]
    assert rollout.error is None and rollout.reward == 1.0
    assert rollout.metrics == {"matches_recorded": 0.0, "judge": 1.0}
    assert "Reference reply:\nASSISTANT: Paris" in asked and "New reply:\nASSISTANT: Lyon" in asked
