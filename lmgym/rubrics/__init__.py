from lmgym.rubrics.rubric import Rubric, group_reward

__all__ = ["Rubric", "group_reward"]
