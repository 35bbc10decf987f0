"""Reverse a string character by character; reward is the longest-common-subsequence ratio.

The text is a few words from a fixed list, drawn with `random.Random(seed)` (the eval
split from a seed derived from it). The reward 2 * LCS / (len(answer) + len(target))
gives partial credit to a nearly reversed string. A text's split is fixed by a hash of
its question, so train and eval never share a text, whatever the seeds and sizes.
"""

from __future__ import annotations

import random

from datasets import Dataset

from lmgym import Rubric, SingleTurnEnv, XMLParser
from lmgym.envs import train_and_eval

SYSTEM_PROMPT = (
    "Write the given text backwards, character by character. Reply with only the reversed "
    "text inside answer tags, for example, for 'red cat': <answer>tac der</answer>"
)
QUESTION = "Reverse this text character by character:\n"
WORDS = (
    "apple river stone cloud green music paper light table ocean happy seven window "
    "garden orange silver yellow forest mountain planet winter summer coffee bridge "
    "pencil rocket castle dragon violin basket candle jungle marble pepper tiger "
    "little quiet simple purple rabbit"
).split()


def lcs_length(a: str, b: str) -> int:
    """Length of the longest common subsequence of `a` and `b` (O(len(a) * len(b)) DP)."""
    previous = [0] * (len(b) + 1)
    for char_a in a:
        current = [0]
        for j, char_b in enumerate(b):
            current.append(previous[j] + 1 if char_a == char_b else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def lcs_ratio(completion, answer: str, parser) -> float:
    """2 * LCS / (len(given) + len(answer)); 0.0 when the reply has no answer."""
    given = parser.parse_answer(completion)
    if not given:
        return 0.0
    return 2 * lcs_length(given, answer) / (len(given) + len(answer))


def load_environment(
    num_examples: int = 200,
    num_eval_examples: int = 100,
    min_words: int = 2,
    max_words: int = 5,
    seed: int = 0,
) -> SingleTurnEnv:
    if num_examples < 1:
        raise ValueError(f"num_examples must be at least 1, got {num_examples}")
    if num_eval_examples < 0:
        raise ValueError(f"num_eval_examples must be at least 0, got {num_eval_examples}")
    if min_words < 1:
        raise ValueError(f"min_words must be at least 1, got {min_words}")
    if max_words < min_words:
        raise ValueError(f"max_words ({max_words}) must be at least min_words ({min_words})")

    def make(rng: random.Random, _index: int) -> dict:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        return {"question": QUESTION + text, "answer": text[::-1]}

    train, evals = train_and_eval(make, num_examples, num_eval_examples, seed, hint="allow more words")
    parser = XMLParser(["answer"])
    rubric = Rubric([lcs_ratio, parser.get_format_reward_func()], weights=[1.0, 0.2], parser=parser)
    return SingleTurnEnv(
        Dataset.from_list(train),
        Dataset.from_list(evals) if evals else None,
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        sampling_args={"temperature": 0.7, "max_tokens": 128},
    )
