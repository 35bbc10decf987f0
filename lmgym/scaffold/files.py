"""Filling the templates of `lmgym init` and writing the new package, once its name is checked.

The templates themselves are files under `templates/` (see the package docstring); what
differs between kinds and is not a file (a description, a README paragraph, the test's
imports) is here.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from importlib import resources
from pathlib import Path
from string import Template

from lmgym import errors
from lmgym.registry import available_environments

KINDS = ("single-turn", "multi-turn", "tool")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")

# What the test of each kind imports for its scripted model (templates/KIND/solver.py.tmpl:
# `solve` answers right, WRONG never does): standard library, then from lmgym.testing.
TEST_IMPORTS = {
    "single-turn": ("import asyncio\nimport re\n", "ScriptedServer, last_user_text"),
    "multi-turn": ("import asyncio\n", "ScriptedServer"),
    "tool": ("import asyncio\nimport re\n", "ScriptedServer, last_user_text, tool_call"),
}

EDITS = {  # the README paragraph "What to edit"
    "single-turn": "Replace `make_row` (or pass a `datasets.Dataset` with `question` and `answer` columns), "
    "`correct_answer` and `SYSTEM_PROMPT`.",
    "multi-turn": "Change `setup_state` (what an episode starts with), `env_response` (what the environment "
    "says after each reply), `is_done` (when the episode ends) and the rewards, which can read `state`.",
    "tool": "Replace `stock` with your own functions and list them in `tools=[...]`; the docstring and "
    "type hints are what the model sees. Then write questions that need them.",
}
DESCRIPTIONS = {
    "single-turn": "Add two numbers; the answer goes in <answer> tags",
    "multi-turn": "Guess a secret number from higher/lower feedback, over several turns",
    "tool": "Answer stock questions by calling a `stock` lookup tool",
}


def template(name: str) -> Template:
    """A file of `templates/` (a path with `/`), read from the installed package."""
    return Template(resources.files("lmgym.scaffold").joinpath("templates", *name.split("/")).read_text(encoding="utf-8"))


def module_name(name: str) -> str:
    return name.replace("-", "_")


def check_name(name: str) -> None:
    """Refuse names that cannot be an environment, or that one already uses.

    An existing environment or importable module of the same name is refused rather than
    warned about: `lmgym eval NAME` would silently load one of the two."""
    if not NAME_PATTERN.fullmatch(name):
        raise errors.UsageError(
            f"invalid environment name {name!r}: use lower-case letters, digits, and single - or _ "
            "between them, starting with a letter (e.g. my-env)"
        )
    module = module_name(name)
    if keyword.iskeyword(module):
        raise errors.UsageError(f"invalid environment name {name!r}: {module!r} is a Python keyword")
    existing = available_environments().get(name.replace("_", "-"))
    if existing is not None:
        raise errors.UsageError(
            f"an environment named {existing.name!r} already exists ({existing.source}); "
            f"pick another name so that `lmgym eval {existing.name}` stays unambiguous"
        )
    spec = importlib.util.find_spec(module)
    if spec is not None:
        raise errors.UsageError(
            f"a Python module named {module!r} already exists ({spec.origin}); "
            "pick another name so that the environment's module does not shadow it"
        )


def render(name: str, kind: str, path: str) -> dict[str, str]:
    """The package's files, by path relative to its directory; `path` is how the README
    and the test refer to that directory."""
    if kind not in KINDS:
        raise errors.UsageError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    module = module_name(name)
    values = {
        "name": name, "module": module, "kind": kind, "path": path,
        "description": DESCRIPTIONS[kind], "edits": EDITS[kind],
        "imports": TEST_IMPORTS[kind][0], "testing": TEST_IMPORTS[kind][1],
    }
    values["solver"] = template(f"{kind}/solver.py.tmpl").substitute(values)
    return {
        "pyproject.toml": template("pyproject.toml.tmpl").substitute(values),
        f"{module}.py": template(f"{kind}/module.py.tmpl").substitute(values),
        "README.md": template("README.md.tmpl").substitute(values),
        f"tests/test_{module}.py": template("test_module.py.tmpl").substitute(values),
    }


def write_package(name: str, kind: str, directory: Path) -> list[Path]:
    """Write the package into `directory`, which must be new or empty, once the name is checked."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise errors.UsageError(f"{directory} already exists and is not empty; choose another --dir or remove it")
    check_name(name)
    files = render(name, kind, directory.as_posix())
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
