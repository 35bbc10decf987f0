"""`lmgym proxy`: record real agent traffic through an authenticated OpenAI-compatible proxy."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Optional

import typer

from lmgym import errors
from lmgym.cli.common import console, exit_on_error
from lmgym.flywheel.proxy import ProxyApp, TraceWriter, forwardable_header_names, http_protocol

TOKEN_VAR = "LMGYM_PROXY_TOKEN"


def proxy_command(
    upstream: Annotated[str, typer.Option("--upstream", "-u", help="Base URL of the OpenAI-compatible API to forward to, as an agent would use it: https://api.openai.com/v1, http://localhost:8000/v1 (vLLM), ...", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the traces: traces-00001.jsonl, traces-00002.jsonl, ... Created if missing; an existing one is continued.", show_default=False)],
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option("--host", help="Address to listen on. 0.0.0.0 accepts agents on other machines (keep a token then).")] = "127.0.0.1",
    token: Annotated[Optional[str], typer.Option("--token", "-t", envvar=TOKEN_VAR, show_envvar=True, show_default=False, help="Token clients must send as their API key (Authorization: Bearer TOKEN); others get 401 and are not forwarded. Prefer the environment variable: a flag shows in `ps`.")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept clients without a token. Only for a proxy nobody else can reach.")] = False,
    upstream_key_var: Annotated[str, typer.Option("--upstream-key-var", "-k", help="Environment variable holding the upstream API key. It is sent upstream only, never logged or recorded.")] = "OPENAI_API_KEY",
    session_header: Annotated[str, typer.Option("--session-header", help="Request header whose value is recorded as the trace's session_id.")] = "X-Session-Id",
    rotate_mb: Annotated[float, typer.Option("--rotate-mb", help="Start a new trace file when the current one would pass this size (MB).")] = 100.0,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each upstream request may take as a whole, from connecting to its last byte (a stream included), not per read: an upstream that trickles bytes cannot hold a client longer. Set it above your slowest generation. After it the client gets 504, or an error event ends its stream, and the trace records 504.")] = 600.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="Largest request body accepted (MB); a larger one gets 413 and is not forwarded.")] = 32.0,
    client_timeout: Annotated[float, typer.Option("--client-timeout", help="Seconds a client may take to send a request's headers, and again its body; a slower one is disconnected (headers) or gets 408 (body), and nothing is forwarded.")] = 60.0,
    forward_header: Annotated[Optional[list[str]], typer.Option("--forward-header", help="Forward this credential header of the client (Cookie, OpenAI-Organization, OpenAI-Project, X-Api-Key, ...), which is dropped by default. Repeatable.", metavar="NAME", show_default=False)] = None,
) -> None:
    """Forward an agent's OpenAI API calls to --upstream and record each exchange.

    Point the agent's base_url at http://HOST:PORT/v1 and its api_key at the token.
    /v1/chat/completions (streaming or not), /v1/completions and /v1/models are forwarded
    unchanged, except that the client's token is replaced by the upstream key and its
    hop-by-hop and credential headers are dropped; every other path is 404. Each chat or
    completions exchange is appended to OUT/traces-NNNNN.jsonl as one JSON line (request,
    response, tool calls, usage, latency, status, upstream error, session id), flushed at
    once; upstream errors reach the client as they came. Ctrl-C stops after the exchanges
    in flight.
    """
    with exit_on_error():
        if no_auth and token:
            raise errors.UsageError(f"--no-auth and a token (--token or ${TOKEN_VAR}) were both given: choose one")
        if not no_auth and not token:
            raise errors.UsageError(
                f"no client token: set ${TOKEN_VAR} (or pass --token); agents then use it as their API key. "
                "--no-auth accepts anyone instead."
            )
        if not upstream.startswith(("http://", "https://")):
            raise errors.UsageError(f"--upstream must be an http:// or https:// URL like https://api.openai.com/v1, got {upstream!r}")
        for flag, value in (("--rotate-mb", rotate_mb), ("--timeout", timeout), ("--max-body-mb", max_body_mb), ("--client-timeout", client_timeout)):
            if not value > 0:
                raise errors.UsageError(f"{flag} must be positive, got {value}")
        try:
            import uvicorn
        except ImportError:
            raise errors.UsageError("lmgym proxy needs uvicorn: pip install uvicorn") from None
        forwardable_header_names(forward_header or ())  # a mistake is said before anything is created
        upstream_key = os.environ.get(upstream_key_var) or None
        writer = TraceWriter(out, rotate_bytes=int(rotate_mb * 2**20), secrets=[upstream_key, token])
        app = ProxyApp(upstream, writer, token=None if no_auth else token, upstream_key=upstream_key,
                       session_header=session_header, timeout=timeout, max_body_bytes=int(max_body_mb * 2**20),
                       client_timeout=client_timeout, forward_headers=forward_header or ())
    _print_banner(upstream, host, port, writer, no_auth, upstream_key_var, upstream_key is not None, session_header, rotate_mb)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
        server_header=False, date_header=False, timeout_graceful_shutdown=10, http=http_protocol(client_timeout),
    )
    previous = signal.signal(signal.SIGTERM, _stop)
    try:  # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again
        uvicorn.Server(config).run()
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(f"stopped: {writer.written} exchange(s) recorded in {writer.directory}", highlight=False)


class _Stopped(Exception):
    """SIGTERM, raised again by uvicorn after its graceful shutdown."""


def _stop(signum, frame) -> None:
    raise _Stopped


def _print_banner(upstream, host, port, writer, no_auth, key_var, has_key, session_header, rotate_mb) -> None:
    shown_host = "THIS_HOST" if host in ("0.0.0.0", "::") else host
    base_url = f"http://{shown_host}:{port}/v1"
    console.print(f"[bold]lmgym proxy[/] listening on {host}:{port}, forwarding to {upstream}", highlight=False)
    console.print(f"traces: {writer.path} (one JSON line per exchange; a new file every {rotate_mb:g} MB)", highlight=False)
    if has_key:
        console.print(f"upstream key: ${key_var} (sent upstream only, never recorded)", highlight=False)
    else:
        console.print(f"[yellow]warning:[/] ${key_var} is not set: requests go upstream without a key", highlight=False)
    if no_auth:
        console.print("[yellow]warning:[/] --no-auth: anyone who can reach this port can use the upstream key", highlight=False)
    api_key = "anything" if no_auth else f"${TOKEN_VAR}"
    console.print(
        "point an agent at it:\n"
        f"  OPENAI_BASE_URL={base_url} OPENAI_API_KEY={api_key}\n"
        f"  (openai SDK: OpenAI(base_url=\"{base_url}\", api_key=...)); send the header\n"
        f"  {session_header}: <id> to group one session's exchanges. Ctrl-C to stop.",
        highlight=False,
    )
