"""AIME 2025: the 30 problems of AIME I and II, 2025; integer answers from 0 to 999 in \\boxed{}.

    lmgym eval aime25 -m MODEL -b URL -n -1 -r 8       # pass@1 .. pass@8 over the 30 problems

Data: math-ai/aime25, test split (test.jsonl), at commit
563bb8404243c5f09de6ec262f2db674fe5bce9b of the dataset's repository, from the Hugging
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

SOURCE = HubFile("aime25", "math-ai/aime25", "563bb8404243c5f09de6ec262f2db674fe5bce9b",
                 "test.jsonl", "test", columns=("problem", "answer"))


def load_environment(data_path: str | None = None) -> SingleTurnEnv:
    return aime_environment(SOURCE, data_path)
