"""Procedural integer arithmetic (+, -, *) with sizes as arguments.

Questions such as "What is 37 + 5 * 12?" are drawn from `random.Random(seed)` (the eval
split from a seed derived from it); the answer is the exact integer under the usual
precedence (`*` before `+` and `-`). A question's split is fixed by a hash of its text,
so train and eval never share a question, whatever the seeds and sizes.

`answer_format="tags"` (default) wants `<answer>N</answer>` and pays 0.2 for the strict
format; `"last-number"` reads the last integer of the reply (the habit of small chat
models that never learnt the tags) and has no format reward.
"""

from __future__ import annotations

import random
import re

from datasets import Dataset

from lmgym import Parser, Rubric, SingleTurnEnv, XMLParser
from lmgym.envs import train_and_eval

SYSTEM_PROMPT = (
    "Compute the value of the expression; * is done before + and -. Reply with only the "
    "integer inside answer tags, for example: <answer>42</answer>"
)
LAST_NUMBER_PROMPT = "Compute the value of the expression; * is done before + and -. End your reply with the integer result."
OPERATORS = "+-*"
INTEGER = re.compile(r"[+-]?\d+")
ANSWER_FORMATS = ("tags", "last-number")


class LastIntegerParser(Parser):
    """The answer is the last integer written in the reply (commas as thousands separators)."""

    def parse(self, text: str) -> str:
        found = re.findall(r"-?\d[\d,]*", text)
        return found[-1].rstrip(",") if found else ""


def evaluate(values: list[int], ops: list[str]) -> int:
    """Value of values[0] ops[0] values[1] ... with * binding tighter than + and -."""
    total, sign, term = 0, 1, values[0]
    for op, value in zip(ops, values[1:]):
        if op == "*":
            term *= value
        else:
            total, sign, term = total + sign * term, (1 if op == "+" else -1), value
    return total + sign * term


def make_question(rng: random.Random, min_operands: int, max_operands: int, max_value: int, operators: str) -> dict:
    count = rng.randint(min_operands, max_operands)
    values = [rng.randint(0, max_value) for _ in range(count)]
    ops = [rng.choice(operators) for _ in range(count - 1)]
    expression = " ".join([str(values[0]), *(f"{op} {v}" for op, v in zip(ops, values[1:]))])
    return {"question": f"What is {expression}?", "answer": str(evaluate(values, ops))}


def correct_answer(completion, answer: str, parser) -> float:
    """1.0 when the answer tag holds exactly the right integer (commas allowed)."""
    given = parser.parse_answer(completion)
    if given is None:
        return 0.0
    given = given.strip().replace(",", "")
    return 1.0 if INTEGER.fullmatch(given) and int(given) == int(answer) else 0.0


def load_environment(
    num_examples: int = 200,
    num_eval_examples: int = 100,
    min_operands: int = 2,
    max_operands: int = 2,
    max_value: int = 100,
    operators: str = OPERATORS,
    seed: int = 0,
    answer_format: str = "tags",
) -> SingleTurnEnv:
    if min_operands < 2:
        raise ValueError(f"min_operands must be at least 2, got {min_operands}")
    if max_operands < min_operands:
        raise ValueError(f"max_operands ({max_operands}) must be at least min_operands ({min_operands})")
    if max_value < 1:
        raise ValueError(f"max_value must be at least 1, got {max_value}")
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if not operators or set(operators) - set(OPERATORS):
        raise ValueError(f"operators must be a non-empty string of {OPERATORS!r}, got {operators!r}")

    def make(rng: random.Random, _index: int) -> dict:
        return make_question(rng, min_operands, max_operands, max_value, operators)

    train, evals = train_and_eval(make, num_examples, num_eval_examples, seed, hint="allow larger or more operands")
    tags = answer_format == "tags"
    parser = XMLParser(["answer"]) if tags else LastIntegerParser()
    system_prompt = SYSTEM_PROMPT if tags else LAST_NUMBER_PROMPT

    def exact_teacher(seed: int = 0) -> list[dict]:
        """Warm-start rows: training questions answered exactly, in the expected format."""
        rows = train_and_eval(make, num_examples, 0, seed, hint="allow larger or more operands")[0]
        return [
            {
                "prompt": [{"role": "system", "content": system_prompt}, {"role": "user", "content": row["question"]}],
                "completion": [{"role": "assistant", "content": parser.format(answer=row["answer"]) if tags else row["answer"]}],
            }
            for row in rows
        ]

    rewards, weights = ([correct_answer, parser.get_format_reward_func()], [1.0, 0.2]) if tags else ([correct_answer], [1.0])
    rubric = Rubric(rewards, weights=weights, parser=parser)
    return SingleTurnEnv(
        Dataset.from_list(train),
        Dataset.from_list(evals) if evals else None,
        system_prompt=system_prompt,
        parser=parser,
        rubric=rubric,
        sampling_args={"temperature": 0.7, "max_tokens": 64},
        sft_examples=exact_teacher,
    )
