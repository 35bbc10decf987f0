"""Environments: a dataset, an interaction protocol, tools and a rubric, and the one
rollout loop (base.py) every kind of environment runs on. What environment authors
import is exported here; the modules behind it may move."""

from lmgym.envs.base import Environment, to_examples
from lmgym.envs.context import RolloutContext
from lmgym.envs.game import GuessingGameEnv, game_rubric
from lmgym.envs.group import EnvGroup
from lmgym.envs.multi_agent import MultiAgentEnv, multi_agent_rubric
from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.envs.openenv import OpenEnvEnv
from lmgym.envs.procedural import generate, split_of, train_and_eval
from lmgym.envs.python_env import PythonEnv
from lmgym.envs.single_turn import SingleTurnEnv
from lmgym.envs.tools import StatefulToolEnv, ToolEnv
from lmgym.envs.user_sim import SimulatedUser, UserSimEnv

__all__ = [
    "EnvGroup", "Environment", "GuessingGameEnv", "MultiAgentEnv", "MultiTurnEnv", "OpenEnvEnv", "PythonEnv", "RolloutContext",
    "SimulatedUser", "SingleTurnEnv", "StatefulToolEnv", "ToolEnv", "UserSimEnv", "game_rubric", "generate",
    "multi_agent_rubric", "split_of", "to_examples", "train_and_eval",
]
