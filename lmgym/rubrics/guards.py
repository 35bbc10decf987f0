"""Guards: length, repetition and prompt-copying penalties as ordinary reward functions.

RL finds the cheapest way to raise the reward. When a verifier or a judge can be swayed by
a longer answer, a restated answer or an echo of the prompt, the policy learns to ramble,
loop or copy. These guards price those habits into the reward itself:

    rubric = Rubric(
        [correct_answer, length_penalty(2000, soft_start=1500), repetition_penalty()],
        weights=[1.0, 0.5, 0.5],
    )

Sign convention: a *penalty* takes values in [-1, 0] (0 = nothing wrong, -1 = as bad as
it gets) and is used with a **positive** weight, so its metric reads as what it costs:
`length_penalty = -0.25` took a quarter of its weight off the reward. Each factory returns
a plain function of `completion` (and `prompt`), named after the factory (pass `name=` to
use two of one kind), so its metric has a clear name.

Every guard reads the assistant text only: tool results and environment messages are not
the model's words. The text helpers (`completion_text`, `words`, `repeated_ngram_fraction`,
`prompt_overlap`) are public because `lmgym.eval.audit` measures the same things on records.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from lmgym.messages import assistant_contents, completion_text, prompt_text
from lmgym.types import Messages

Measure = Literal["chars", "words"] | Callable[[str], int]
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased runs of letters, digits and underscores: `<answer>42</answer>` -> answer, 42, answer."""
    return _WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_fraction(text: str, n: int = 4) -> float:
    """The share of word n-grams that repeat an earlier one: 1 - distinct / total.

    0.0 for text with no repeats (or fewer than n words); it approaches 1.0 for a phrase
    looped many times. `a b c d a b c d` has 4-grams abcd, bcda, cdab, dabc, abcd: 1 - 4/5 = 0.2.
    """
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def prompt_overlap(text: str, prompt: str, n: int = 5) -> float:
    """The share of the text's word n-grams that also occur in the prompt (0.0 with none)."""
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    source = set(ngrams(words(prompt), n))
    return sum(g in source for g in grams) / len(grams)


def _ramp(excess: float) -> float:
    """0 for excess ≤ 0, -excess in between, -1 from excess ≥ 1."""
    return -min(max(excess, 0.0), 1.0)


def _measure_func(measure: Measure) -> Callable[[str], int]:
    if callable(measure):
        return measure
    if measure == "chars":
        return len
    if measure == "words":
        return lambda text: len(words(text))
    raise ValueError(f"measure must be 'chars', 'words' or a function of the text, got {measure!r}")


def _check_tolerance(tolerance: float) -> None:
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")


def length_penalty(
    max_len: int,
    *,
    soft_start: int | None = None,
    measure: Measure = "chars",
    name: str = "length_penalty",
) -> Callable[[str | Messages], float]:
    """A penalty for long completions: 0 up to `soft_start`, falling linearly to -1 at
    `max_len`, and -1 beyond it. This is DAPO's overlong reward shaping (arXiv 2503.14476,
    "soft overlong punishment"); without `soft_start` it is a step at `max_len`.

    `measure` is "chars", "words", or a function of a text such as
    `lambda s: len(tokenizer.encode(s))` to count tokens. It is applied to each assistant
    reply and summed over the replies.
    """
    count = _measure_func(measure)
    start = max_len if soft_start is None else soft_start
    if max_len <= 0 or not 0 <= start <= max_len:
        raise ValueError(f"need 0 <= soft_start <= max_len and max_len > 0, got soft_start={soft_start}, max_len={max_len}")

    def penalty(completion: str | Messages) -> float:
        length = sum(count(c) for c in assistant_contents(completion) if isinstance(c, str))
        if length <= start:
            return 0.0
        if length >= max_len:
            return -1.0
        return _ramp((length - start) / (max_len - start))

    penalty.__name__ = penalty.__qualname__ = name
    return penalty


def repetition_penalty(n: int = 4, *, tolerance: float = 0.1, name: str = "repetition_penalty") -> Callable[[str | Messages], float]:
    """A penalty for looping text: with f = `repeated_ngram_fraction` of the assistant text
    over word n-grams, the value is -(f - tolerance) / (1 - tolerance), clipped to [-1, 0].

    `tolerance` leaves the few repeats of ordinary prose unpunished; a phrase looped until
    the token limit has f near 1 and costs the full weight.
    """
    _check_n(n)
    _check_tolerance(tolerance)

    def penalty(completion: str | Messages) -> float:
        fraction = repeated_ngram_fraction(completion_text(completion), n)
        return _ramp((fraction - tolerance) / (1.0 - tolerance))

    penalty.__name__ = penalty.__qualname__ = name
    return penalty


def copies_prompt_penalty(n: int = 5, *, tolerance: float = 0.2, name: str = "copies_prompt_penalty") -> Callable[..., float]:
    """A penalty for echoing the prompt: with f = the share of the completion's word
    n-grams found in the prompt (`prompt_overlap`), the value is -(f - tolerance) / (1 - tolerance),
    clipped to [-1, 0]. Quoting a few phrases of the question costs nothing; pasting the
    prompt back, for a grader that rewards overlap or a leaked answer, costs the full weight.
    """
    _check_n(n)
    _check_tolerance(tolerance)

    def penalty(completion: str | Messages, prompt: str | Messages) -> float:
        fraction = prompt_overlap(completion_text(completion), prompt_text(prompt), n)
        return _ramp((fraction - tolerance) / (1.0 - tolerance))

    penalty.__name__ = penalty.__qualname__ = name
    return penalty
