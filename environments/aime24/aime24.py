"""AIME 2024: the 30 problems of AIME I and II, 2024; integer answers from 0 to 999 in \\boxed{}.

    lmgym eval aime24 -m MODEL -b URL -n -1 -r 8       # pass@1 .. pass@8 over the 30 problems

Data: HuggingFaceH4/aime_2024, train split (data/train-00000-of-00001.parquet), at commit
2fe88a2f1091d5048c0f36abc874fb997b3dd99a of the dataset's repository, from the Hugging
Face hub, or a local copy in the same columns (`id`, `problem`, `answer`):
`-a '{"data_path": "FILE"}'` or LMGYM_BENCHMARK_DATA (see lmgym.envs.benchmarks.hub). The
commit is the one several public evaluation setups pin; it was not checked against the
hub from here (no network).

Scoring (lmgym.envs.benchmarks.aime): the reward `correct` is 1 when the reply's last
\\boxed{} holds the answer as an integer (leading zeros allowed), else 0.
"""

from __future__ import annotations

from lmgym.envs import SingleTurnEnv
from lmgym.envs.benchmarks import HubFile, aime_environment

SOURCE = HubFile("aime24", "HuggingFaceH4/aime_2024", "2fe88a2f1091d5048c0f36abc874fb997b3dd99a",
                 "data/train-00000-of-00001.parquet", "train", columns=("problem", "answer"))


def load_environment(data_path: str | None = None) -> SingleTurnEnv:
    return aime_environment(SOURCE, data_path)
