"""`lmgym serve`: an lmgym environment served over the OpenEnv protocol."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lmgym.cli.common import console, exit_on_error
from lmgym.cli.eval import parse_json_object
from lmgym.errors import UsageError
from lmgym.eval.serve import OpenEnvApp
from lmgym.registry import load_environment


def serve_command(
    env: Annotated[str, typer.Argument(help="Environment name (see `lmgym list`).", show_default=False)],
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on; 0.0.0.0 accepts clients on other machines.")] = "127.0.0.1",
    env_args: Annotated[Optional[str], typer.Option("--env-args", "-a", help='JSON object passed to load_environment, e.g. \'{"max_value": 1000}\'.')] = None,
    split: Annotated[str, typer.Option("--split", help='Which examples a reset draws from: "eval" (the evaluation split) or "train".')] = "eval",
) -> None:
    """Serve ENV over the OpenEnv protocol, so OpenEnv clients (TRL, SkyRL, ART) can train on it.

    Each WebSocket session at /ws is one episode of lmgym's own rollout loop: reset (with a
    seed or an example_id) gives the first messages and the tools, each step sends the
    model's reply ({"content": ..., "tool_calls": [...]}), and the last observation
    carries the rubric's reward and metrics. GET /health, /schema and /metadata as OpenEnv.
    """
    with exit_on_error():
        if split not in ("eval", "train"):
            raise UsageError(f'--split must be "eval" or "train", got {split!r}')
        environment = load_environment(env, **(parse_json_object(env_args, "-a/--env-args") if env_args else {}))
        try:
            app = OpenEnvApp(environment, env, split)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        import uvicorn

        console.print(f"[bold]lmgym serve[/] {env}: OpenEnv protocol on http://{host}:{port} ({len(app.examples)} {split} examples; sessions at ws://{host}:{port}/ws)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", ws="websockets-sansio")
