"""The public surface is pinned, and importing lmgym never imports torch."""

import subprocess
import sys

import lmgym


def test_exported_names():
    assert sorted(lmgym.__all__) == sorted([
        "EnvGroup", "Environment", "Example", "LmgymError", "Message", "ModelClient", "ModelResponse",
        "MultiAgentEnv", "MultiTurnEnv", "OpenAIClient", "Parser", "PythonEnv", "Rollout", "RolloutContext", "RolloutError", "Rubric",
        "SimulatedUser", "SingleTurnEnv", "StatefulToolEnv", "ThinkParser", "ToolCall", "ToolEnv", "Turn", "Usage", "UserSimEnv", "XMLParser",
        "group_reward", "load_environment",
    ])
    assert all(hasattr(lmgym, name) for name in lmgym.__all__)


def test_import_does_not_import_torch():
    code = "import sys, lmgym, lmgym.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
