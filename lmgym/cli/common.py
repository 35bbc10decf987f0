"""What every command does with lmgym's errors: one line, and exit 2 for bad input, else 1."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from lmgym import errors

console = Console(stderr=True)
INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C, as a shell gives it (128 + SIGINT)


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    try:
        yield
    except errors.LmgymError as exc:
        print_error(exc)
        raise typer.Exit(2 if isinstance(exc, errors.UsageError) else 1) from None


def print_error(error: object) -> None:
    """`error: MESSAGE`, the message printed as it is: `[sft]` in it is text, not rich markup."""
    console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
