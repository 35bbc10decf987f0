"""lmgym.envs.benchmarks.choices: lettered options, reproducible shuffles, and letters read
by MMLU-Pro's and GPQA's rules."""

import pytest

from lmgym.envs.benchmarks.choices import GPQA, LETTERS, MMLU_PRO, lettered, read_letter, shuffled


def test_lettered_options_one_per_line_in_the_template():
    assert lettered(["red", "blue"]) == "(A) red\n(B) blue"
    assert lettered(["x"] * 10, "{letter}. {option}").splitlines()[-1] == "J. x"
    with pytest.raises(ValueError, match="at most 10 options"):
        lettered(["x"] * 11)


def test_a_shuffle_is_fixed_by_its_key_and_tracks_the_first_option():
    options = ["right", "w1", "w2", "w3"]
    orders = {tuple(shuffled(options, f"0/q{i}")[0]) for i in range(40)}
    assert len(orders) > 10  # keys draw different orders
    for i in range(40):
        shown, correct = shuffled(options, f"0/q{i}")
        assert sorted(shown) == sorted(options) and shown[correct] == "right"
        assert shuffled(options, f"0/q{i}") == (shown, correct)
    assert {shuffled(options, f"0/q{i}")[1] for i in range(40)} == {0, 1, 2, 3}  # the right one is not always A


@pytest.mark.parametrize("text, letter", [
    ("so the answer is (C).", "C"),
    ("The answer is D", "D"),
    ("The answer is (C). Answer: B", "C"),                # "answer is" first
    ("Answer: B\nlater Answer: E", "B"),                  # else "Answer:", its first line
    ("Answer: A or Answer: G", "G"),                      # ... and the last on that line
    ("Between E and H, H fits better.", "H"),             # else the last capital A-J alone
    ("I think so", "I"),                                  # their rule reads a lone "I" too
    ("no letter here at all", None),
    ("the answer is (K)", None),
])
def test_mmlu_pro_reads_the_letter_as_its_script_does(text, letter):
    assert read_letter(text, MMLU_PRO, LETTERS) == letter


@pytest.mark.parametrize("text, letter", [
    ("The correct answer is (B)", "B"),
    ("Answer: (D)", "D"),
    ("I pick answer (A)", "A"),
    ("(C) looks right", "C"),                             # any "(X)" last
    ("The correct answer is (E)? No. Answer: (C)", "C"),  # a rule whose letter is not an option is passed over
    ("The correct answer is B", None),                    # no parentheses, no answer
])
def test_gpqa_reads_the_letter_with_its_authors_patterns(text, letter):
    assert read_letter(text, GPQA, "ABCD") == letter
