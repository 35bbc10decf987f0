"""`lmgym check-template MODEL`: does this model's chat template serve training?"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from lmgym.cli.common import exit_on_error


def check_template_command(
    model: Annotated[str, typer.Argument(help='"tiny-llama", "smollm2", or a directory holding a saved model and tokenizer.')],
    chat_template: Annotated[Optional[str], typer.Option(help='Check this template instead of the model\'s own: "chatml-tools" or a Jinja file (model.chat_template).')] = None,
    tool_format: Annotated[str, typer.Option(help='How the model writes tool calls: hermes, qwen3, llama3, mistral, or auto (model.tool_format).')] = "auto",
) -> None:
    """Check that the chat template keeps each turn a prefix of the next, and renders tools.

    Multi-turn training continues each conversation from the exact tokens the model
    sampled, which needs the template's rendering of a conversation to extend its
    rendering of every earlier turn. For each case (plain turns, tool calls, tool
    results, reasoning, a system prompt with tools) this prints whether that holds and,
    if not, the first token that differs; and whether the tool calls the template writes
    are read back by the tool format. Training still works where a case fails: those
    rollouts are split per turn and counted in `rollouts_split_per_turn`.
    """
    from lmgym.parsers.tool_calls import FORMATS
    from lmgym.train.chat_templates import configure_tokenizer, resolve_tool_format
    from lmgym.train.models import load_tokenizer  # torch: imported when the command runs, not with the CLI
    from lmgym.train.template_check import check_template, tool_support_problems

    if tool_format != "auto" and tool_format not in FORMATS:
        raise typer.BadParameter(f"{tool_format!r} is not one of auto, {', '.join(FORMATS)}", param_hint="--tool-format")
    with exit_on_error():
        tokenizer = load_tokenizer(model)
        configure_tokenizer(tokenizer, chat_template)
    fmt = resolve_tool_format(tokenizer, tool_format)
    console = Console()
    table = Table(show_header=True, header_style="bold", box=None)
    for column in ("case", "prefix", "calls read back", "first difference"):
        table.add_column(column)
    results = check_template(tokenizer, fmt)
    mark = {True: "[green]pass[/]", False: "[red]fail[/]", None: "[dim]-[/]"}
    for result in results:
        table.add_row(result.name, mark[result.prefix_ok], mark[result.calls_read_back], result.detail)
    console.print(f"model {model}: tool format {fmt.name if fmt else 'none'}")
    console.print(table)
    problems = tool_support_problems(tokenizer, fmt)
    failed = sum(not r.prefix_ok for r in results)
    console.print(f"tools: {'ready to train tool environments' if not problems else '; '.join(problems)}")
    console.print(f"{len(results) - failed} of {len(results)} cases keep the prefix property"
                  + (": rollouts like the failing ones are split per turn in training" if failed else ""))
