"""What the bundled standard benchmarks (gsm8k, math500, aime24, aime25, gpqa-diamond,
mmlu-pro, mbpp; environments/NAME) share, one concept per module:

- `hub`: a benchmark's data, one file of a Hugging Face dataset at a pinned commit, or a
  local copy of it in the same schema (the offline tests' fixtures are such copies);
- `choices`: multiple-choice questions, lettered options shuffled reproducibly, and the
  letter read back from a reply by the benchmark's own rules;
- `code`: the code of a reply, and a check program run in lmgym's sandbox;
- `answers`: final answers in `\\boxed{}` (MATH-500, AIME) and AIME's integer answers;
- `aime`: the AIME environment, built the same way for each year.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each name's module, imported on first use: `answers` imports sympy (a second), `code` the sandbox.
_MODULES = {
    "DATA_DIR_VAR": "hub", "HubFile": "hub", "Row": "hub", "load_rows": "hub",
    "GPQA": "choices", "LETTERS": "choices", "MMLU_PRO": "choices", "ChoiceParser": "choices", "choice_rubric": "choices",
    "lettered": "choices", "read_letter": "choices", "shuffled": "choices",
    "CodeBlockParser": "code", "run_check": "code", "passed_reward": "code",
    "BOXED_PROMPT": "answers", "BoxedParser": "answers", "aime_integer": "answers",
    "aime_environment": "aime",
}
__all__ = sorted(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module 'lmgym.envs.benchmarks' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lmgym.envs.benchmarks.{_MODULES[name]}"), name)
