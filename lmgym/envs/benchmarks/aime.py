"""The AIME environment, one per year: 30 problems whose answers are integers from 0 to 999.

The model is asked for its final answer in `\\boxed{}`; the reward `correct` is 1 when the
last box holds that integer (leading zeros allowed, "033" for 33), else 0: no box, or a
box holding anything else (a fraction, an expression, a number out of range).
"""

from __future__ import annotations

from datasets import Dataset

from lmgym.envs.benchmarks.answers import BOXED_PROMPT, BoxedParser, aime_integer
from lmgym.envs.benchmarks.hub import HubFile, Row, load_rows
from lmgym.envs.single_turn import SingleTurnEnv
from lmgym.rubrics.rubric import Rubric


def aime_row(row: Row, index: int) -> Row:
    """One problem: its text, its integer answer (as text), its id."""
    answer = aime_integer(str(row["answer"]))
    if answer is None:
        raise ValueError(f"row {index + 1}: an AIME answer is an integer from 0 to 999, got {row['answer']!r}")
    return {"id": str(row.get("id", index)), "question": row["problem"], "answer": str(answer)}


def correct(completion, answer, parser) -> float:
    return float(aime_integer(parser.parse_answer(completion)) == int(answer))


def aime_environment(source: HubFile, data_path: str | None = None) -> SingleTurnEnv:
    rows = [aime_row(row, i) for i, row in enumerate(load_rows(source, data_path))]
    parser = BoxedParser()
    return SingleTurnEnv(
        eval_dataset=Dataset.from_list(rows),
        system_prompt=BOXED_PROMPT,
        parser=parser,
        rubric=Rubric([correct], parser=parser),
        sampling_args={"temperature": 0.6, "max_tokens": 8192},
    )
