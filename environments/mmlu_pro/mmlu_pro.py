"""MMLU-Pro (TIGER-Lab): 12,032 questions in 14 subjects, up to ten options, a letter answer read as its authors read it.

    lmgym eval mmlu-pro -m MODEL -b URL -n 500 --seed 0     # 500 questions drawn at random

Data: TIGER-Lab/MMLU-Pro, test split (data/test-00000-of-00001.parquet), at commit
b189ec765aa7ed75c8acfea42df31fdae71f97be of the dataset's repository, from the Hugging
Face hub, or a local copy in the same columns (`question_id`, `question`, `options`,
`answer`, `category`): `-a '{"data_path": "FILE"}'` or LMGYM_BENCHMARK_DATA (see
lmgym.envs.benchmarks.hub). The commit is the one several public evaluation setups pin;
it was not checked against the hub from here (no network).

The prompt is the authors' chain-of-thought instruction and question format, zero-shot
(their script adds five worked examples of the subject from the validation split);
options "N/A" are dropped as their script drops them. The letter is read as their script
reads it: "answer is (X)", else "Answer: X", else the last capital A-J standing alone
(lmgym.envs.benchmarks.choices.MMLU_PRO). The reward `correct` is 1 for the right letter,
else 0; a reply with no letter scores 0 (their script counts it wrong too).
"""

from __future__ import annotations

from datasets import Dataset

from lmgym import SingleTurnEnv
from lmgym.envs.benchmarks import LETTERS, MMLU_PRO, ChoiceParser, HubFile, Row, choice_rubric, lettered, load_rows

SOURCE = HubFile("mmlu-pro", "TIGER-Lab/MMLU-Pro", "b189ec765aa7ed75c8acfea42df31fdae71f97be",
                 "data/test-00000-of-00001.parquet", "test", columns=("question_id", "question", "options", "answer", "category"))
PROMPT = (
    "The following are multiple choice questions (with answers) about {category}. Think step by step and then "
    'output the answer in the format of "The answer is (X)" at the end.\n\n'
    "Question: {question}\nOptions: {options}\nAnswer: Let's think step by step."
)


def question(row: Row) -> Row:
    options = [option for option in row["options"] if option != "N/A"]
    text = PROMPT.format(category=row["category"], question=row["question"], options=lettered(options, "{letter}. {option}"))
    return {"id": row["question_id"], "question": text, "answer": row["answer"], "category": row["category"]}


def load_environment(data_path: str | None = None) -> SingleTurnEnv:
    rows = [question(row) for row in load_rows(SOURCE, data_path)]
    parser = ChoiceParser(MMLU_PRO, letters=LETTERS)
    return SingleTurnEnv(
        eval_dataset=Dataset.from_list(rows),
        parser=parser,
        rubric=choice_rubric(parser),
        sampling_args={"temperature": 0.0, "max_tokens": 4096},
    )
