from lmgym.envs.base import Environment, to_examples
from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.envs.single_turn import SingleTurnEnv

__all__ = ["Environment", "MultiTurnEnv", "SingleTurnEnv", "to_examples"]
