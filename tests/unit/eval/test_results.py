"""results.jsonl: appended line by line, repaired and deduplicated on resume."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from lmgym.errors import ResultsFileError
from lmgym.eval.results import ResultsWriter, read_results


def rec(example_id, rollout):
    return {"example_id": example_id, "rollout": rollout, "reward": 1.0, "state": {"obj": object()}}


def test_writer_appends_flushed_lines_and_stringifies_odd_state(tmp_path):
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write([rec(0, 0)])
    assert len(path.read_bytes().splitlines()) == 1  # flushed before close
    writer.write([rec(0, 1), rec(1, 0)])
    writer.close()
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [(r["example_id"], r["rollout"]) for r in lines] == [(0, 0), (0, 1), (1, 0)]
    assert lines[0]["state"]["obj"].startswith("<object object")


def test_torn_tail_and_duplicates_are_dropped_and_file_repaired(tmp_path):
    path = tmp_path / "results.jsonl"
    good = b"".join(orjson.dumps(r, default=str) + b"\n" for r in [rec(0, 0), rec(0, 0), rec(0, 1)])
    path.write_bytes(good + b'{"example_id": 1, "rol')
    records = read_results(path)
    assert [(r["example_id"], r["rollout"]) for r in records] == [(0, 0), (0, 1)]
    assert len(path.read_bytes().splitlines()) == 2


def test_incomplete_groups_are_dropped_for_group_rubrics(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r, default=str) + b"\n" for r in [rec(0, 0), rec(0, 1), rec(1, 0)]))
    records = read_results(path, complete_groups_of=2)
    assert [(r["example_id"], r["rollout"]) for r in records] == [(0, 0), (0, 1)]


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"example_id": 0, "rollout": 0}\nnot json\n{"example_id": 1, "rollout": 0}\n')
    with pytest.raises(ResultsFileError, match=r"results.jsonl:2"):
        read_results(path)


def test_writer_closes_a_last_line_that_lacks_its_newline(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(orjson.dumps(rec(0, 0), default=str))  # a script wrote it without "\n"
    writer = ResultsWriter(path)
    writer.write([rec(0, 1)])
    writer.close()
    assert [(r["example_id"], r["rollout"]) for r in read_results(path)] == [(0, 0), (0, 1)]


async def test_from_a_coroutine_the_rollouts_finishing_together_are_flushed_together(tmp_path):
    path = tmp_path / "results.jsonl"
    writer = ResultsWriter(path)
    writer.write([rec(0, 0)])
    writer.write([rec(0, 1)])
    assert path.read_bytes() == b""  # still in this pass of the event loop
    await asyncio.sleep(0)
    assert len(path.read_bytes().splitlines()) == 2  # flushed as the pass ended, before anything else ran
    writer.write([rec(1, 0)])
    writer.close()  # flushes what is pending
    assert len(path.read_bytes().splitlines()) == 3
