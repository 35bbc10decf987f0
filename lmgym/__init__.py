"""lmgym: environments for language-model agents, evaluated and trained alike.

The public surface is what `__all__` lists; everything else may move. Importing lmgym
never imports torch.
"""

from lmgym.clients import ModelClient, OpenAIClient
from lmgym.envs import (
    EnvGroup,
    Environment,
    MultiAgentEnv,
    MultiTurnEnv,
    PythonEnv,
    RolloutContext,
    SimulatedUser,
    SingleTurnEnv,
    StatefulToolEnv,
    ToolEnv,
    UserSimEnv,
)
from lmgym.errors import LmgymError
from lmgym.parsers import Parser, ThinkParser, XMLParser
from lmgym.registry import load_environment
from lmgym.rubrics import Rubric, group_reward
from lmgym.types import (
    Example,
    Message,
    ModelResponse,
    Rollout,
    RolloutError,
    ToolCall,
    Turn,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "EnvGroup",
    "Environment",
    "Example",
    "LmgymError",
    "Message",
    "ModelClient",
    "ModelResponse",
    "MultiAgentEnv",
    "MultiTurnEnv",
    "OpenAIClient",
    "Parser",
    "PythonEnv",
    "Rollout",
    "RolloutContext",
    "RolloutError",
    "Rubric",
    "SimulatedUser",
    "SingleTurnEnv",
    "StatefulToolEnv",
    "ThinkParser",
    "ToolCall",
    "ToolEnv",
    "Turn",
    "Usage",
    "UserSimEnv",
    "XMLParser",
    "group_reward",
    "load_environment",
]
