"""GPQA Diamond: 198 graduate-level science questions, four options shuffled per question, a letter answer.

    HF_TOKEN=... lmgym eval gpqa-diamond -m MODEL -b URL -n -1

Data: Idavidrein/gpqa, config gpqa_diamond, train split (gpqa_diamond.csv), at commit
633f5ee89ab8ad4522a9f850766b73f62147ffdd of the dataset's repository. The dataset is
gated: accept its terms on its hub page and set HF_TOKEN, or use a local copy in the same
columns (`Question`, `Correct Answer`, `Incorrect Answer 1` to `3`, `Record ID`):
`-a '{"data_path": "gpqa_diamond.csv"}'` or LMGYM_BENCHMARK_DATA (see
lmgym.envs.benchmarks.hub). The commit is the one several public evaluation setups pin;
it was not checked against the hub from here (no network).

The correct answer is listed first in the data, so the options are shuffled, the same way
on every run for a given `seed` (drawn from the seed and the question's Record ID). The
prompt is the authors' zero-shot chain of thought; the letter is read with the authors'
patterns ("answer is (X)", ..., then any "(X)", lmgym.envs.benchmarks.choices.GPQA). The
reward `correct` is 1 for the right letter, else 0 (another letter, or none).
"""

from __future__ import annotations

from datasets import Dataset

from lmgym import SingleTurnEnv
from lmgym.envs.benchmarks import GPQA, LETTERS, ChoiceParser, HubFile, Row, choice_rubric, lettered, load_rows, shuffled

WRONG = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
SOURCE = HubFile("gpqa-diamond", "Idavidrein/gpqa", "633f5ee89ab8ad4522a9f850766b73f62147ffdd", "gpqa_diamond.csv",
                 "train", columns=("Question", "Correct Answer", *WRONG, "Record ID"), gated=True)
PROMPT = (
    "What is the correct answer to this question: {question}\n\nChoices:\n{choices}\n\n"
    'Think step by step, then end your reply with "The correct answer is (X)", X being the letter of your choice.'
)


def question(row: Row, seed: int) -> Row:
    """The question with its options shuffled by the seed and its Record ID; the answer is the correct one's letter."""
    options = [str(row[column]).strip() for column in ("Correct Answer", *WRONG)]
    shown, correct = shuffled(options, f"{seed}/{row['Record ID']}")
    text = PROMPT.format(question=str(row["Question"]).strip(), choices=lettered(shown))
    return {"id": row["Record ID"], "question": text, "answer": LETTERS[correct],
            "domain": row.get("High-level domain", ""), "subdomain": row.get("Subdomain", "")}


def load_environment(data_path: str | None = None, seed: int = 0) -> SingleTurnEnv:
    rows = [question(row, seed) for row in load_rows(SOURCE, data_path)]
    parser = ChoiceParser(GPQA, letters="ABCD")
    return SingleTurnEnv(
        eval_dataset=Dataset.from_list(rows),
        parser=parser,
        rubric=choice_rubric(parser),
        sampling_args={"temperature": 0.0, "max_tokens": 4096},
    )
