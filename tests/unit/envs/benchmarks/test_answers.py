"""lmgym.envs.benchmarks.answers: the last \\boxed{} of a reply, and AIME's integer answers."""

import pytest

from lmgym.envs.benchmarks.answers import BoxedParser, aime_integer


@pytest.mark.parametrize("reply, answer", [
    ("so \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),                # braces inside the box
    ("first \\boxed{1}, then \\boxed{ 2 }", "2"),                # the last box
    ("The answer is 12.", None),                                 # no box, no answer
    ("\\boxed{12", None),                                        # unbalanced
])
def test_the_boxed_parser_takes_the_last_box(reply, answer):
    assert BoxedParser().parse_answer(reply) == answer


@pytest.mark.parametrize("text, value", [
    ("33", 33), ("033", 33), (" 999 ", 999), ("0", 0), ("$204$", 204),
    ("1000", None), ("-5", None), ("33.5", None), ("\\frac{1}{2}", None), ("", None), (None, None),
])
def test_an_aime_answer_is_an_integer_from_0_to_999(text, value):
    assert aime_integer(text) == value
