"""The public surface is pinned, and importing lmgym never imports torch."""

import ast
import importlib
import subprocess
import sys

from paths import ROOT

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
    """Nor what the `lmgym train --nproc` launcher imports: it checks, then starts the ranks."""
    code = "import sys, lmgym, lmgym.cli, lmgym.train.launch, lmgym.train.run_files; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_public_packages_pin_their_names():
    import lmgym.envs
    import lmgym.rubrics
    import lmgym.testing

    assert sorted(lmgym.envs.__all__) == sorted([
        "EnvGroup", "Environment", "GuessingGameEnv", "MultiAgentEnv", "MultiTurnEnv", "OpenEnvEnv", "PythonEnv", "RolloutContext",
        "SimulatedUser", "SingleTurnEnv", "StatefulToolEnv", "ToolEnv", "UserSimEnv", "game_rubric", "generate",
        "multi_agent_rubric", "split_of", "to_examples", "train_and_eval",
    ])
    assert sorted(lmgym.rubrics.__all__) == sorted([
        "CriteriaRubric", "GroupJudge", "Judge", "JudgeEndpoint", "JudgeRubric", "MathRubric", "Rubric",
        "copies_prompt_penalty", "group_reward", "length_penalty", "repetition_penalty",
    ])
    assert sorted(lmgym.testing.__all__) == sorted([
        "BackgroundServer", "Fault", "ScriptedApp", "ScriptedServer", "last_user_text", "stream_chunks", "tool_call",
    ])
    for module in (lmgym.envs, lmgym.rubrics, lmgym.testing):
        assert all(hasattr(module, name) for name in module.__all__), module.__name__


# Modules environment authors may import from, and only the names each exports.
PUBLIC_MODULES = ("lmgym", "lmgym.envs", "lmgym.envs.benchmarks", "lmgym.rubrics", "lmgym.parsers", "lmgym.sandbox", "lmgym.testing",
                  "lmgym.flywheel", "lmgym.errors", "lmgym.types", "lmgym.messages")


def public_names(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    return set(getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")])


def test_bundled_environments_import_only_public_names():
    root = ROOT / "environments"
    wrong = []
    for path in sorted(root.rglob("*.py")):
        if "tests" in path.relative_to(root).parts:
            continue  # an environment's tests may look inside lmgym; its code may not
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmgym"):
                if node.module not in PUBLIC_MODULES:
                    wrong.append(f"{path.relative_to(root)}: from {node.module} import ...")
                    continue
                names = public_names(node.module)
                wrong += [f"{path.relative_to(root)}: {node.module}.{a.name}" for a in node.names if a.name not in names]
            elif isinstance(node, ast.Import):
                wrong += [f"{path.relative_to(root)}: import {a.name}" for a in node.names
                          if a.name.startswith("lmgym.") and a.name not in PUBLIC_MODULES]
    assert wrong == []
