"""MATH-500: 500 competition problems of the MATH test set, answered in \\boxed{} and checked for mathematical equivalence.

    lmgym eval math500 -m MODEL -b URL -n -1

Data: HuggingFaceH4/MATH-500, test split (test.jsonl), at commit
6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be of the dataset's repository, from the Hugging
Face hub, or a local copy in the same columns (`problem`, `answer`, `unique_id`, and
`subject`, `level` when present): `-a '{"data_path": "FILE"}'` or LMGYM_BENCHMARK_DATA
(see lmgym.envs.benchmarks.hub). The commit is the one several public evaluation setups
pin; it was not checked against the hub from here (no network).

Scoring: the content of the reply's last \\boxed{} against the reference answer with
lmgym's `MathRubric` (math-verify, in worker processes under a time limit), so equal
forms agree (\\frac{3}{4} and 0.75); `math_correct` is the reward, and a reply without a
box scores 0.
"""

from __future__ import annotations

from datasets import Dataset

from lmgym import SingleTurnEnv
from lmgym.envs.benchmarks import BOXED_PROMPT, BoxedParser, HubFile, Row, load_rows
from lmgym.rubrics import MathRubric

SOURCE = HubFile("math500", "HuggingFaceH4/MATH-500", "6e4ed1a2a79af7d8630a6b768ec859cb5af4d3be",
                 "test.jsonl", "test", columns=("problem", "answer", "unique_id"))


def problem(row: Row) -> Row:
    return {"id": row["unique_id"], "question": row["problem"], "answer": row["answer"],
            "subject": row.get("subject", ""), "level": row.get("level", 0)}


def load_environment(data_path: str | None = None) -> SingleTurnEnv:
    rows = [problem(row) for row in load_rows(SOURCE, data_path)]
    parser = BoxedParser()
    return SingleTurnEnv(
        eval_dataset=Dataset.from_list(rows),
        system_prompt=BOXED_PROMPT,
        parser=parser,
        rubric=MathRubric(parser),
        sampling_args={"temperature": 0.0, "max_tokens": 4096},
        audit_skip={"reward_without_answer": "an equal form (0.75 for \\frac{3}{4}) need not contain the reference's text"},
    )
