"""aime25 on its fixture (three problems written for lmgym in math-ai/aime25's columns):
loaded by argument and by folder, scored on the integer in the last \\boxed{}."""

import json

import pytest
from benchmark_checks import check_loads_its_fixture_both_ways, fixture, load_fixture, rewards
from bundled_checks import check_package_metadata_matches_module

import lmgym

ANSWER = "56"  # of the first problem


def test_loads_its_fixture_with_integer_answers(monkeypatch):
    env = check_loads_its_fixture_both_ways("aime25", monkeypatch, rows=3)
    assert [e.answer for e in env.eval_dataset] == ["56", "19", "316"]
    assert "\\boxed{}" in env.eval_dataset[0].prompt[0]["content"]


def test_package_metadata_matches_module():
    check_package_metadata_matches_module("aime25")


@pytest.mark.parametrize("reply, reward", [
    (f"So there are \\boxed{{{ANSWER}}} of them.", 1.0),
    (f"\\boxed{{00{ANSWER}}}", 1.0),                     # leading zeros, as AIME answers are written
    (f"\\boxed{{{int(ANSWER) + 1}}}", 0.0),
    (f"\\boxed{{{ANSWER}.5}}", 0.0),                       # not an integer
    (f"The answer is {ANSWER}.", 0.0),                     # no box: no answer
])
async def test_scored_on_the_integer_in_the_last_box(reply, reward):
    assert await rewards(load_fixture("aime25"), [reply]) == [reward]


def test_an_answer_that_is_no_aime_integer_is_refused(tmp_path):
    rows = [json.loads(line) for line in fixture("aime25").read_text().splitlines()]
    rows[2]["answer"] = "1/2"
    (tmp_path / "aime25.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(lmgym.LmgymError, match=r"row 3: an AIME answer is an integer from 0 to 999, got '1/2'"):
        lmgym.load_environment("aime25", data_path=str(tmp_path / "aime25.jsonl"))

