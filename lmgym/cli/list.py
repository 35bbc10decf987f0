"""`lmgym list`: the environments lmgym can find, one line each."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from lmgym.registry import available_environments, describe


def list_command() -> None:
    """List the environments found through entry points and environments/ folders."""
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("environment")
    table.add_column("description")
    table.add_column("found in", style="dim")
    for name, spec in available_environments().items():
        try:
            description = describe(spec)
        except Exception as exc:  # a broken environment must not hide the others
            description = f"[red]cannot be loaded: {type(exc).__name__}: {exc}[/]"
        table.add_row(name, description, spec.source)
    Console().print(table)
