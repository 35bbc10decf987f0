"""GSM8K (OpenAI): grade-school math word problems, scored on the number after '####'.

    lmgym eval gsm8k -m MODEL -b URL -n -1          # the 1,319 test problems

Data: openai/gsm8k, config main, test split, at commit 740312add88f781978c0658806c59bc2815b9866
of the dataset's repository (main/test-00000-of-00001.parquet), from the Hugging Face hub,
or a local copy in the same columns (`question`, `answer`): `-a '{"data_path": "FILE"}'`
or LMGYM_BENCHMARK_DATA (see lmgym.envs.benchmarks.hub). The commit is the one several
public evaluation setups pin; it was not checked against the hub from here (no network).

Scoring, as the dataset's authors grade: a reference solution ends with '#### <answer>'
and so must the model's reply; the reward `correct` is 1 when the number after the
reply's last '####' equals the reference's, commas dropped and compared as numbers (18 =
18.00), else 0 (no '####' followed by a number, or another number).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from datasets import Dataset

from lmgym import Rubric, SingleTurnEnv
from lmgym.envs.benchmarks import HubFile, Row, load_rows
from lmgym.parsers import Parser

SOURCE = HubFile("gsm8k", "openai/gsm8k", "740312add88f781978c0658806c59bc2815b9866",
                 "main/test-00000-of-00001.parquet", "test", columns=("question", "answer"))
SYSTEM_PROMPT = (
    "Solve the math word problem step by step. End your reply with a line '#### ' followed by "
    "the final answer as a number only, for example: #### 42"
)
FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")


def number(text: str | None) -> Decimal | None:
    """The number after the last '####' of `text`, commas dropped; None when there is none."""
    found = FINAL.findall(text or "")
    try:
        return Decimal(found[-1].replace(",", "")) if found else None
    except InvalidOperation:
        return None


class FinalNumberParser(Parser):
    """The answer is the text of the number after the last '####' of the last reply."""

    def parse(self, text: str) -> str | None:
        value = number(text)
        return None if value is None else str(value)


def correct(completion, answer, parser) -> float:
    found = parser.parse_answer(completion)
    return float(found is not None and Decimal(found) == Decimal(answer))


def problem(row: Row, index: int) -> Row:
    """A test problem: the question, the reference's final number, and its whole solution."""
    answer = number(row["answer"])
    if answer is None:
        raise ValueError(f"row {index + 1}: the answer does not end with '#### <number>': {row['answer'][-80:]!r}")
    return {"id": index, "question": row["question"], "answer": str(answer), "solution": row["answer"]}


def load_environment(data_path: str | None = None) -> SingleTurnEnv:
    rows = [problem(row, i) for i, row in enumerate(load_rows(SOURCE, data_path))]
    parser = FinalNumberParser()
    return SingleTurnEnv(
        eval_dataset=Dataset.from_list(rows),
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=Rubric([correct], parser=parser),
        sampling_args={"temperature": 0.0, "max_tokens": 1024},
    )
