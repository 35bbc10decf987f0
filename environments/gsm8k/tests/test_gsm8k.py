"""gsm8k on its fixture (four problems written for lmgym in openai/gsm8k's columns): loaded
by argument and by folder, scored on the number after '####', and run end to end with
`lmgym eval` against a scripted model."""

import json

import orjson
import pytest
from benchmark_checks import check_loads_its_fixture_both_ways, fixture, load_fixture, rewards
from bundled_checks import check_package_metadata_matches_module
from cli_runner import invoke

import lmgym
from lmgym.testing import ScriptedServer, last_user_text


def test_loads_its_fixture_with_the_final_numbers_as_answers(monkeypatch):
    env = check_loads_its_fixture_both_ways("gsm8k", monkeypatch, rows=4)
    assert [e.answer for e in env.eval_dataset] == ["55", "21", "5850", "35"]  # "#### 5,850" read as a number
    system, user = env.eval_dataset[0].prompt
    assert "####" in system["content"] and user["content"].startswith("Mira packs 6 crates")
    assert env.eval_dataset[0].info["solution"].endswith("#### 55")


def test_package_metadata_matches_module():
    check_package_metadata_matches_module("gsm8k")


@pytest.mark.parametrize("reply, reward", [
    ("6 * 14 = 84, 84 - 29 = 55.\n#### 55", 1.0),
    ("#### 55.00", 1.0),                           # compared as numbers
    ("#### $55", 1.0),
    ("First #### 54, no wait:\n#### 55", 1.0),     # the last '####'
    ("#### 56", 0.0),
    ("She has 55 lemons left.", 0.0),              # no '####': no answer
    ("#### fifty-five", 0.0),
    (None, 0.0),                                   # no reply at all
])
async def test_scored_on_the_number_after_the_last_marker(reply, reward):
    assert await rewards(load_fixture("gsm8k"), [reply]) == [reward]


async def test_thousands_separators_are_dropped():
    assert await rewards(load_fixture("gsm8k"), ["#### 5,850", "#### 5850", "#### 585"], example_index=2) == [1.0, 1.0, 0.0]


def test_a_reference_without_a_final_number_is_refused(tmp_path):
    rows = [json.loads(line) for line in fixture("gsm8k").read_text().splitlines()]
    rows[1]["answer"] = "21 dollars"
    (tmp_path / "gsm8k.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(lmgym.LmgymError, match=r"row 2: the answer does not end with '#### <number>'"):
        lmgym.load_environment("gsm8k", data_path=str(tmp_path / "gsm8k.jsonl"))


def test_lmgym_eval_runs_it_end_to_end_against_a_scripted_model(tmp_path):
    """The fixture as a user passes it (-a data_path), a scripted model that solves three of
    the four problems, and the run's results, summary and pass@k."""
    env = load_fixture("gsm8k")
    answers = {e.prompt[-1]["content"]: e.answer for e in env.eval_dataset}
    wrong = env.eval_dataset[3].prompt[-1]["content"]

    def reply(request):
        question = last_user_text(request)
        return f"Working it out.\n#### {int(answers[question]) + (question == wrong)}"

    with ScriptedServer(reply=reply) as server:
        result = invoke("eval", "gsm8k", "-m", "scripted", "-b", server.base_url, "-n", "-1", "-r", "2",
                        "-a", json.dumps({"data_path": str(fixture("gsm8k"))}), "-o", str(tmp_path / "run"),
                        env={"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 0, result.output
    records = [orjson.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_bytes().splitlines()]
    assert len(records) == 8
    assert sorted(r["reward"] for r in records) == [0.0] * 2 + [1.0] * 6
    assert all(r["metrics"]["correct"] == r["reward"] for r in records)
    summary = orjson.loads((tmp_path / "run" / "metadata.json").read_bytes())["summary"]
    assert summary["pass_at_k"]["1"] == pytest.approx(0.75)
    assert len(server.requests) == 8 and server.requests[0]["temperature"] == 0.0
