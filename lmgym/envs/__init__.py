from lmgym.envs.base import Environment, to_examples
from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.envs.single_turn import SingleTurnEnv
from lmgym.envs.tools import ToolEnv

__all__ = ["Environment", "MultiTurnEnv", "SingleTurnEnv", "ToolEnv", "to_examples"]
