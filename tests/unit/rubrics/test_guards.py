"""Guards: length, repetition and prompt-copying penalties, against hand-computed values."""

from __future__ import annotations

import pytest

from lmgym import Example, Rollout, Rubric, Turn
from lmgym.rubrics.guards import (
    completion_text,
    copies_prompt_penalty,
    length_penalty,
    prompt_overlap,
    prompt_text,
    repeated_ngram_fraction,
    repetition_penalty,
    words,
)


def reply(*texts: str) -> list[dict]:
    """A completion: assistant replies with a tool message between them, which guards ignore."""
    messages: list[dict] = []
    for text in texts:
        messages += [{"role": "assistant", "content": text}, {"role": "tool", "tool_call_id": "t", "content": "x" * 500}]
    return messages


def test_text_helpers():
    assert words("<answer>42</answer> Hello, World") == ["answer", "42", "answer", "hello", "world"]
    assert completion_text(reply("a", "b")) == "a\nb"
    assert completion_text("plain") == "plain"
    assert prompt_text([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "s\nu"
    # abcd bcda cdab dabc abcd: 5 four-grams, 4 distinct
    assert repeated_ngram_fraction("a b c d a b c d", 4) == pytest.approx(0.2)
    assert repeated_ngram_fraction("a b c", 4) == 0.0
    assert repeated_ngram_fraction("go go go go go", 1) == pytest.approx(0.8)
    # completion 3-grams: (x y z) (y z q); only (x y z) is in the prompt
    assert prompt_overlap("x y z q", "w x y z", 3) == pytest.approx(0.5)


@pytest.mark.parametrize("length, expected", [(40, 0.0), (50, 0.0), (75, -0.5), (90, -0.8), (100, -1.0), (250, -1.0)])
def test_length_penalty_ramps_from_soft_start_to_max(length, expected):
    penalty = length_penalty(100, soft_start=50)
    assert penalty("x" * length) == pytest.approx(expected)


def test_length_penalty_sums_assistant_replies_and_counts_words_or_tokens():
    step = length_penalty(10)  # no soft start: a step at max_len
    assert step(reply("x" * 5, "x" * 5)) == 0.0  # tool output (500 chars) does not count
    assert step(reply("x" * 5, "x" * 6)) == -1.0
    by_words = length_penalty(4, soft_start=2, measure="words")
    assert by_words(reply("one two", "three")) == pytest.approx(-0.5)
    by_tokens = length_penalty(8, soft_start=0, measure=lambda s: len(s.split("-")))  # a toy tokenizer
    assert by_tokens("a-b") == pytest.approx(-0.25)


def test_repetition_penalty_with_tolerance():
    looped = "a b c d a b c d"  # f = 0.2
    assert repetition_penalty(4, tolerance=0.0)(looped) == pytest.approx(-0.2)
    assert repetition_penalty(4, tolerance=0.1)(looped) == pytest.approx(-(0.2 - 0.1) / 0.9)
    assert repetition_penalty(4, tolerance=0.2)(looped) == 0.0
    assert repetition_penalty(1, tolerance=0.0)("go " * 101) == pytest.approx(-100 / 101)
    assert repetition_penalty()("The answer is 42.") == 0.0


def test_copies_prompt_penalty():
    prompt = [{"role": "user", "content": "w x y z"}]
    assert copies_prompt_penalty(3, tolerance=0.0)("x y z q", prompt) == pytest.approx(-0.5)
    assert copies_prompt_penalty(3, tolerance=0.5)("x y z q", prompt) == 0.0
    assert copies_prompt_penalty(3, tolerance=0.2)(reply("w x y z"), prompt) == -1.0
    assert copies_prompt_penalty(3)("something else entirely here", prompt) == 0.0


def test_names_are_the_metric_names_and_can_be_chosen():
    assert length_penalty(10).__name__ == "length_penalty"
    assert repetition_penalty().__name__ == "repetition_penalty"
    assert copies_prompt_penalty().__name__ == "copies_prompt_penalty"
    assert length_penalty(10, name="hard_length_cap").__name__ == "hard_length_cap"


@pytest.mark.parametrize("make", [
    lambda: length_penalty(0), lambda: length_penalty(10, soft_start=11), lambda: length_penalty(10, measure="bytes"),
    lambda: repetition_penalty(0), lambda: repetition_penalty(tolerance=1.0), lambda: copies_prompt_penalty(tolerance=-0.1),
])
def test_bad_arguments_are_refused(make):
    with pytest.raises(ValueError):
        make()


async def test_penalties_in_a_rubric_use_a_positive_weight():
    def correct(completion, answer) -> float:
        return float(answer in completion[-1]["content"])

    example = Example(id=1, prompt=[{"role": "user", "content": "2+2?"}], answer="4")
    rollout = Rollout(example=example, turns=[Turn({"role": "assistant", "content": "4 " * 30 + "so 4"})])
    rubric = Rubric([correct, length_penalty(40, soft_start=20), repetition_penalty(1, tolerance=0.0)], weights=[1.0, 0.5, 0.5])
    await rubric.score_group([rollout])
    # 64 chars ≥ 40: -1; 32 words, 2 distinct: 1 - 2/32 = 0.9375
    assert rollout.metrics == pytest.approx({"correct": 1.0, "length_penalty": -1.0, "repetition_penalty": -0.9375})
    assert rollout.reward == pytest.approx(1.0 - 0.5 - 0.5 * 0.9375)
