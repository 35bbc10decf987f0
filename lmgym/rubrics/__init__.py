from lmgym.rubrics.criteria import CriteriaRubric
from lmgym.rubrics.guards import copies_prompt_penalty, length_penalty, repetition_penalty
from lmgym.rubrics.judge import GroupJudge, Judge, JudgeEndpoint, JudgeRubric
from lmgym.rubrics.rubric import Rubric, group_reward

# MathRubric lives in lmgym.rubrics.math_rubric: it imports sympy, which takes a second.
__all__ = [
    "CriteriaRubric",
    "GroupJudge",
    "Judge",
    "JudgeEndpoint",
    "JudgeRubric",
    "Rubric",
    "copies_prompt_penalty",
    "group_reward",
    "length_penalty",
    "repetition_penalty",
]
