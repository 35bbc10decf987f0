"""`lmgym init`: scaffold a working environment package to edit."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from lmgym.cli.common import exit_on_error
from lmgym.scaffold import module_name, write_package


class Kind(str, Enum):
    single_turn = "single-turn"
    multi_turn = "multi-turn"
    tool = "tool"


def init_command(
    name: Annotated[str, typer.Argument(help="Environment name: lower-case letters and digits, with - or _ between them (e.g. my-env). The module is NAME with _ for -.")],
    directory: Annotated[Optional[Path], typer.Option("--dir", help="Directory to create (new or empty). Default environments/NAME, where `lmgym eval NAME` finds it from this folder even before it is installed.")] = None,
    kind: Annotated[Kind, typer.Option("--kind", help="single-turn: one reply per question; multi-turn: the environment answers each reply (env_response/is_done); tool: the model calls Python functions (ToolEnv).")] = Kind.single_turn,
) -> None:
    """Create a package for a new environment: pyproject.toml, NAME.py, README.md and a test.

    It installs with `pip install -e DIR`, runs with `lmgym eval NAME`, and its test
    (`pytest DIR`) plays the model with lmgym.testing.ScriptedServer.
    """
    with exit_on_error():
        directory = directory or Path("environments") / name
        written = write_package(name, kind.value, directory)
    console = Console(highlight=False)
    console.print(f"created {directory}/ ({kind.value} environment {name!r}):")
    for path in written:
        console.print(f"  {path.relative_to(directory).as_posix()}")
    module = module_name(name)
    console.print(
        f"next:\n  edit {directory / (module + '.py')}\n  pytest {directory}\n"
        f"  pip install -e {directory}\n  lmgym eval {name}"
    )
