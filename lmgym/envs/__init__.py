from lmgym.envs.base import Environment, to_examples
from lmgym.envs.context import RolloutContext
from lmgym.envs.group import EnvGroup
from lmgym.envs.multi_agent import MultiAgentEnv
from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.envs.python_env import PythonEnv
from lmgym.envs.single_turn import SingleTurnEnv
from lmgym.envs.tools import StatefulToolEnv, ToolEnv
from lmgym.envs.user_sim import SimulatedUser, UserSimEnv

__all__ = ["EnvGroup", "Environment", "MultiAgentEnv", "MultiTurnEnv", "PythonEnv", "RolloutContext", "SimulatedUser", "SingleTurnEnv", "StatefulToolEnv", "ToolEnv", "UserSimEnv", "to_examples"]
