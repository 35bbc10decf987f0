"""gpqa-diamond on its fixture (three questions written for lmgym in the columns of
Idavidrein/gpqa's gpqa_diamond.csv): loaded by argument and by folder, options shuffled
reproducibly, and scored on the letter read with GPQA's patterns."""

from benchmark_checks import check_loads_its_fixture_both_ways, load_fixture, rewards
from bundled_checks import check_package_metadata_matches_module

from lmgym.envs.benchmarks.choices import LETTERS


def shown_options(example) -> list[str]:
    return [line[4:] for line in example.prompt[-1]["content"].splitlines() if line[:1] == "(" and line[2:4] == ") "]


def test_loads_its_fixture_with_shuffled_options_and_the_right_letter(monkeypatch):
    env = check_loads_its_fixture_both_ways("gpqa-diamond", monkeypatch, rows=3)
    second = env.eval_dataset[1]
    assert second.id == "recLMG002" and second.info["domain"] == "Chemistry"
    assert second.prompt[-1]["content"].startswith("What is the correct answer to this question: A solution has")
    assert sorted(shown_options(second)) == ["-3", "0.001", "11", "3"]  # stripped, as the CSV pads them
    for example, correct in zip(env.eval_dataset, ["Total kinetic energy", "3", "The mitochondrion"]):
        assert shown_options(example)[LETTERS.index(example.answer)] == correct


def test_the_order_is_the_same_for_a_seed_and_changes_with_it():
    orders = {seed: [shown_options(e) for e in load_fixture("gpqa-diamond", seed=seed).eval_dataset] for seed in range(6)}
    assert orders[0] == [shown_options(e) for e in load_fixture("gpqa-diamond", seed=0).eval_dataset]
    assert len({str(order) for order in orders.values()}) > 1


def test_package_metadata_matches_module():
    check_package_metadata_matches_module("gpqa-diamond")


async def test_scored_on_the_letter_read_with_gpqas_patterns():
    env = load_fixture("gpqa-diamond")
    right = env.eval_dataset[0].answer
    wrong = next(letter for letter in "ABCD" if letter != right)
    replies = [f"Momentum is conserved in both.\nThe correct answer is ({right})", f"The correct answer is ({wrong})",
               f"The correct answer is {right}", "I cannot tell.", None]
    assert await rewards(env, replies) == [1.0, 0.0, 0.0, 0.0, 0.0]  # no parentheses, no letter: no answer

