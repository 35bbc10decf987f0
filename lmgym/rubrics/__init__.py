"""Rubrics: weighted reward functions, judges, generated criteria and guards against
reward hacking. What rubric authors import is exported here."""

from lmgym.rubrics.criteria import CriteriaRubric
from lmgym.rubrics.guards import copies_prompt_penalty, length_penalty, repetition_penalty
from lmgym.rubrics.judge import GroupJudge, Judge, JudgeEndpoint, JudgeRubric
from lmgym.rubrics.rubric import Rubric, group_reward

__all__ = [
    "CriteriaRubric",
    "GroupJudge",
    "Judge",
    "JudgeEndpoint",
    "JudgeRubric",
    "MathRubric",
    "Rubric",
    "copies_prompt_penalty",
    "group_reward",
    "length_penalty",
    "repetition_penalty",
]


def __getattr__(name: str):
    """MathRubric is imported on first use: it imports sympy, which takes a second."""
    if name == "MathRubric":
        from lmgym.rubrics.math_rubric import MathRubric

        return MathRubric
    raise AttributeError(f"module 'lmgym.rubrics' has no attribute {name!r}")
