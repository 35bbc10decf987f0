"""The `lmgym` command: one Typer app, one module per command."""

from __future__ import annotations

import logging
import os

import typer
import typer.core

import lmgym
from lmgym.cli.audit import audit_command
from lmgym.cli.check_template import check_template_command
from lmgym.cli.demo import demo_command
from lmgym.cli.distill import distill_command
from lmgym.cli.eval import eval_command
from lmgym.cli.export import export_command
from lmgym.cli.init import init_command
from lmgym.cli.list import list_command
from lmgym.cli.proxy import proxy_command
from lmgym.cli.serve import serve_command
from lmgym.cli.traces import traces_command
from lmgym.cli.train import OVERRIDES, sft_command, train_command
from lmgym.cli.view import view_command

app = typer.Typer(
    name="lmgym",
    help="Build environments for language-model agents, evaluate any OpenAI-compatible model on them, and train on them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _flags_show_no_type(display_type_rich):
    """typer 0.29 prints `--help <bool>` and `--audit <bool>`: a flag takes no value, so
    its help shows none."""
    def display(self, ctx):
        return None if self.is_flag else display_type_rich(self, ctx)
    return display


if hasattr(typer.core.TyperOption, "display_type_rich"):  # typer >= 0.29; older ones print flags right
    typer.core.TyperOption.display_type_rich = _flags_show_no_type(typer.core.TyperOption.display_type_rich)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"lmgym {lmgym.__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print lmgym's version and exit."),
) -> None:
    """Build environments for language-model agents, evaluate any OpenAI-compatible model on them, and train on them."""


app.command("eval", context_settings=OVERRIDES)(eval_command)
app.command("list")(list_command)
app.command("init")(init_command)
app.command("export")(export_command)
app.command("train", context_settings=OVERRIDES)(train_command)
app.command("sft", context_settings=OVERRIDES)(sft_command)
app.command("view")(view_command)
app.command("audit")(audit_command)
app.command("proxy")(proxy_command)
app.command("serve")(serve_command)
app.command("traces")(traces_command)
app.command("distill", context_settings=OVERRIDES)(distill_command)
app.command("check-template")(check_template_command)
app.command("demo")(demo_command)


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("LMGYM_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app()
