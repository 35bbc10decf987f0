"""`lmgym traces` on traces that are valid JSON but hold fields of the wrong type: each is
skipped with one warning naming the file, the line and the field, and counted as
malformed; the good traces around it are written, in every format, with no traceback."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_runner import invoke

from lmgym import errors
from lmgym.flywheel import traces as tr

GOOD: dict[str, Any] = {
    "id": "0" * 31 + "1", "session_id": "s1", "endpoint": "/v1/chat/completions",
    "started_at": 1736503200.0, "finished_at": 1736503200.5, "latency_s": 0.5, "stream": False,
    "request": {"model": "gpt-a", "tools": None, "sampling": {},
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]},
    "status": 200,
    "response": {"model": "gpt-a-2025", "content": "Paris", "tool_calls": None, "finish_reason": "stop"},
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}, "error": None,
}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}


def odd(path: str, value: Any) -> dict[str, Any]:
    """Another trace like GOOD (not a duplicate of it) with the field at `path` (keys and
    list indices, dotted) set to `value`, or removed when `value` is `DELETE`."""
    trace = copy.deepcopy(GOOD)
    trace["id"] = "0" * 31 + "2"
    trace["request"]["messages"][1]["content"] = "Capital of Italy?"
    trace["response"]["content"] = "Rome"
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = trace
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return trace


DELETE = object()


def lmgym(*args: str):
    """`lmgym ARGS` in this process, wide enough that no warning line wraps."""
    return invoke(*args, env={"COLUMNS": "200"})


def write_traces(folder: Path, *traces: dict[str, Any]) -> Path:
    folder.mkdir()
    path = folder / "traces-00001.jsonl"
    path.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in traces))
    return path


def run_traces(tmp_path: Path, bad: dict[str, Any], *extra: str, out_name: str = "sft.jsonl") -> tuple[Any, Path, Path]:
    """`lmgym traces` over a file of GOOD (line 1) and `bad` (line 2)."""
    path = write_traces(tmp_path / "traces", GOOD, bad)
    out = tmp_path / out_name
    return lmgym("traces", str(path.parent), "--to", "sft", "-o", str(out), *extra), path, out


def assert_skipped_with_one_line(result, path: Path, field: str) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if f"{path}:2: {field}" in line]
    assert len(lines) == 1, result.stderr
    assert "trace skipped" in lines[0]
    assert int(re.search(r"dropped: malformed lines or fields\s*│\s*(\d+)", result.stdout).group(1)) == 1


def kept_ids(out: Path) -> list[str]:
    return [row["trace_id"] for row in tr.load_rows(out)]


CASES = {
    "list-valued request model": ("request.model", ["gpt-a", "gpt-b"], "request.model is a list"),
    "list-valued response model": ("response.model", ["gpt-a-2025"], "response.model is a list"),
    "string tool_calls in the reply": ("response.tool_calls", "get_weather(Oslo)", "response.tool_calls is a string"),
    "string tool_calls in the prompt": ("request.messages.1.tool_calls", "[]", "request.messages[1].tool_calls is a string"),
    "a tool call without a function": ("response.tool_calls", [{"id": "call_1"}], "response.tool_calls[0].function is null"),
    "tool call arguments as an object": ("response.tool_calls", [{**CALL, "function": {"name": "f", "arguments": {"a": 1}}}],
                                         "response.tool_calls[0].function.arguments is an object"),
    "a message without a role": ("request.messages.0.role", DELETE, "request.messages[0] has no role"),
    "a role that is a number": ("request.messages.1.role", 1, "request.messages[1].role is a number"),
    "a message that is a string": ("request.messages.1", "Capital of France?", "request.messages[1] is a string"),
    "content that is an object": ("request.messages.1.content", {"text": "Capital?"}, "request.messages[1].content is an object"),
    "content that is a number": ("response.content", 42, "response.content is a number"),
    "a session id that is a list": ("session_id", ["s1"], "session_id is a list"),
    "a start time that is text": ("started_at", "2025-01-10", "started_at is a string"),
    # the record's own fields: each once counted under a wrong reason, or kept
    "a response that is a list": ("response", [1], "response is a list"),
    "an error that is text": ("error", "x", "error is a string"),
    "messages that are null": ("request.messages", None, "request.messages is null"),
    "an endpoint that is a list": ("endpoint", ["/v1/chat/completions"], "endpoint is a list"),
    "a status that is text": ("status", "200", "status is a string"),
    "usage that is text": ("usage", "x", "usage is a string"),
    "a stream flag that is text": ("stream", "yes", "stream is a string"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_field_of_the_wrong_type_is_skipped_with_one_line(tmp_path, case):
    where, value, field = CASES[case]
    result, path, out = run_traces(tmp_path, odd(where, value))
    assert_skipped_with_one_line(result, path, field)
    assert kept_ids(out) == [GOOD["id"]]


def test_filters_do_not_trip_on_a_list_valued_model_or_session(tmp_path):
    bad = odd("request.model", ["gpt-a", "gpt-b"])
    bad["session_id"] = ["s1"]
    result, path, out = run_traces(tmp_path, bad, "--model", "gpt-a", "--session", "s1")
    assert_skipped_with_one_line(result, path, "session_id is a list")
    assert kept_ids(out) == [GOOD["id"]]


@pytest.mark.parametrize("where, value, field", [  # each would be a column of two types
    ("response.model", ["gpt-a", "gpt-b"], "response.model is a list"),
    ("started_at", "2025-01-10", "started_at is a string"),
    ("session_id", ["s1", "s2"], "session_id is a list"),
])
def test_parquet_output_of_rows_that_would_mix_types(tmp_path, where, value, field):
    result, path, out = run_traces(tmp_path, odd(where, value), out_name="sft.parquet")
    assert_skipped_with_one_line(result, path, field)
    assert kept_ids(out) == [GOOD["id"]]


def test_good_variants_are_still_kept(tmp_path):
    """Text parts, null content with tool calls, an integer start time: all fit their columns."""
    parts = odd("request.messages.1.content", [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "Spain?"}])
    calls = odd("response.tool_calls", [CALL])
    calls.update(id="0" * 31 + "3", started_at=1736503201)
    calls["response"]["content"] = None
    path = write_traces(tmp_path / "traces", GOOD, parts, calls)
    out = tmp_path / "sft.parquet"
    result = lmgym("traces", str(path.parent), "--to", "sft", "-o", str(out))
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stderr
    assert kept_ids(out) == [GOOD["id"], parts["id"], calls["id"]]


def test_saving_rows_of_mixed_types_names_the_column_and_row(tmp_path):
    rows = [{"trace_id": "a", "model": "gpt-a"}, {"trace_id": "b", "model": "gpt-b"}, {"trace_id": "c", "model": ["gpt-a"]}]
    with pytest.raises(errors.UsageError, match=r"column 'model' of row 3 is \[\"gpt-a\"\].*write a \.jsonl file"):
        tr.save_rows(rows, tmp_path / "rows.parquet", "parquet")
    assert tr.save_rows(rows, tmp_path / "rows.jsonl", "jsonl").exists()
