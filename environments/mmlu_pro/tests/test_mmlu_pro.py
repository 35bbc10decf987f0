"""mmlu-pro on its fixture (three questions written for lmgym in TIGER-Lab/MMLU-Pro's
columns): loaded by argument and by folder, in the authors' prompt format, and scored on
the letter read as their script reads it."""

import pytest
from benchmark_checks import check_loads_its_fixture_both_ways, load_fixture, rewards
from bundled_checks import check_package_metadata_matches_module


def test_loads_its_fixture_in_the_authors_format(monkeypatch):
    env = check_loads_its_fixture_both_ways("mmlu-pro", monkeypatch, rows=3)
    assert [e.answer for e in env.eval_dataset] == ["C", "C", "J"]
    assert [e.id for e in env.eval_dataset] == [90001, 90002, 90003]
    text = env.eval_dataset[1].prompt[-1]["content"]
    assert text.startswith("The following are multiple choice questions (with answers) about business.")
    assert "Options: A. Revenue over a year\nB. Cash flows over a quarter\n" in text
    assert "N/A" not in text and "\nE. " not in text  # its two "N/A" options are dropped
    assert text.endswith("D. Share price history\nAnswer: Let's think step by step.")
    assert "\nJ. Boyle's law\n" in env.eval_dataset[2].prompt[-1]["content"]


def test_package_metadata_matches_module():
    check_package_metadata_matches_module("mmlu-pro")


@pytest.mark.parametrize("reply, reward", [
    ("Boyle's law relates them. The answer is (J)", 1.0),
    ("the answer is J.", 1.0),
    ("Answer: J", 1.0),
    ("It is (J), Boyle's.", 1.0),            # the last capital A-J alone
    ("The answer is (A)", 0.0),
    ("The answer is (A). Answer: J", 0.0),   # "answer is" is read first
    ("no idea", 0.0),                        # no letter: no answer
    (None, 0.0),
])
async def test_scored_on_the_letter_their_script_reads(reply, reward):
    assert await rewards(load_fixture("mmlu-pro"), [reply], example_index=2) == [reward]
