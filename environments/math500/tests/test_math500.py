"""math500 on its fixture (four problems written for lmgym in HuggingFaceH4/MATH-500's
columns): loaded by argument and by folder, scored by MathRubric on the last \\boxed{}."""

import pytest
from benchmark_checks import check_loads_its_fixture_both_ways, load_fixture, rewards
from bundled_checks import check_package_metadata_matches_module


def test_loads_its_fixture_with_ids_answers_and_subjects(monkeypatch):
    env = check_loads_its_fixture_both_ways("math500", monkeypatch, rows=4)
    assert [e.answer for e in env.eval_dataset] == ["\\frac{3}{4}", "6", "(1,2)", "2\\sqrt{5}"]
    assert env.eval_dataset[0].id == "test/prealgebra/9001.json"
    assert env.eval_dataset[1].info["subject"] == "Algebra" and env.eval_dataset[1].info["level"] == 1
    assert "\\boxed{}" in env.eval_dataset[0].prompt[0]["content"]


def test_package_metadata_matches_module():
    check_package_metadata_matches_module("math500")


@pytest.mark.parametrize("index, reply, reward", [
    (0, "So the sum is \\boxed{\\frac{3}{4}}.", 1.0),
    (0, "\\boxed{0.75}", 1.0),                              # an equal form
    (0, "\\boxed{3/4}", 1.0),
    (0, "\\boxed{\\frac{1}{2}} at first, then \\boxed{\\frac{3}{4}}", 1.0),  # the last box
    (0, "\\boxed{\\frac{2}{3}}", 0.0),
    (0, "The sum is 3/4.", 0.0),                             # no box: no answer
    (2, "\\boxed{(1, 2)}", 1.0),
    (2, "\\boxed{(2, 1)}", 0.0),
    (3, "\\boxed{\\sqrt{20}}", 1.0),
    (3, "\\boxed{4\\sqrt{5}}", 0.0),
])
async def test_scored_by_math_equivalence_on_the_last_box(index, reply, reward):
    assert await rewards(load_fixture("math500"), [reply], example_index=index) == [reward]
