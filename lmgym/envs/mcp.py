"""`MCPToolEnv`: a `ToolEnv` whose tools are served by MCP servers (stdio), through the `mcp` SDK.

    env = MCPToolEnv(eval_dataset=rows, servers=[
        {"name": "notes", "command": "python", "args": ["notes_server.py"], "env": {"NOTES_DIR": "/tmp/n"}},
    ])
    async with env.running():          # what the eval runner and the trainer do around a run
        rollout = await env.rollout(client, model, example)

`start()` launches every server, runs the MCP handshake and lists its tools; from then
on they sit in `toolbox` beside any plain Python `tools=` and are dispatched exactly like
them (bad arguments, timeouts and failures come back to the model as "Error: ..."
tool messages). `stop()` closes the servers: stdin closed, then SIGTERM, then SIGKILL to
the whole process group, as the SDK does. One server process serves the whole run, so
a server that keeps state keeps it across rollouts.

The SDK enters anyio cancel scopes that must be left in the task that entered them, so
the servers are owned by one background task from `start()` to `stop()`: the two may
be called from any task, and a failure inside the SDK's task groups cannot cancel the
caller's task.

A server sees only the environment variables it is configured with, plus the SDK's safe
defaults (PATH, HOME, USER, LOGNAME, SHELL, TERM): the parent's API keys are not passed
on unless named in `env`. Its stderr goes to a temporary file, quoted when it fails.

A server that cannot start, or two servers offering one tool name, stop `start()` with
`ToolServerError`. A server that dies mid-run also raises it, out of the rollout, so the
run stops rather than scoring every later rollout against broken tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import IO, Any

import jsonschema

from lmgym import errors
from lmgym.envs.tools import ToolEnv, calls_of
from lmgym.errors import BadToolCall, ToolServerError
from lmgym.types import Messages, Rollout

try:
    from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
    from mcp import types as mcp_types
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("MCPToolEnv needs the `mcp` SDK: pip install 'lmgym[mcp]'") from exc

logger = logging.getLogger(__name__)

STDERR_TAIL = 2000  # characters of a failed server's stderr quoted in the error


class MCPToolError(Exception):
    """The server ran the tool and reported it failed (`isError`); the text is its own."""


@dataclass(frozen=True)
class MCPServer:
    """How to launch one MCP server over stdio."""

    name: str
    command: str
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)  # the only variables passed on, besides the SDK's safe ones
    cwd: str | None = None
    start_timeout: float = 30.0  # seconds for the process to start, finish the handshake and list its tools

    def __post_init__(self):
        if not self.command or not isinstance(self.command, str):
            raise errors.UsageError(f"MCP server {self.name!r}: `command` must be a non-empty string")
        if isinstance(self.args, str) or not all(isinstance(a, str) for a in self.args):
            raise errors.UsageError(f"MCP server {self.name!r}: `args` must be a list of strings, got {self.args!r}")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(self.env).items()):
            raise errors.UsageError(f"MCP server {self.name!r}: `env` must map strings to strings")
        object.__setattr__(self, "args", tuple(self.args))  # frozen, and equal however it was given

    def __str__(self) -> str:
        return f"MCP server {self.name!r} (`{shlex.join([self.command, *self.args])}`)"


def as_server(spec: MCPServer | Mapping[str, Any], position: int) -> MCPServer:
    """An MCPServer from itself or from a config dict, naming the bad key in a dict."""
    if isinstance(spec, MCPServer):
        return spec
    if not isinstance(spec, Mapping):
        raise errors.UsageError(f"servers[{position}] must be an MCPServer or a dict, got {type(spec).__name__}")
    known = [f.name for f in fields(MCPServer)]
    unknown = sorted(set(spec) - set(known))
    missing = [k for k in ("name", "command") if k not in spec]
    if unknown or missing:
        problem = f"unknown key(s) {unknown}" if unknown else f"missing key(s) {missing}"
        raise errors.UsageError(f"servers[{position}]: {problem}; an MCP server takes {known}")
    return MCPServer(**spec)


def render(result: mcp_types.CallToolResult) -> str:
    """The text the model reads: text blocks joined, other content described, else the
    structured result as JSON."""
    parts = [_describe(block) for block in result.content]
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content)
    return "\n".join(parts)


def _describe(block: Any) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, (mcp_types.ImageContent, mcp_types.AudioContent)):
        return f"[{block.type} {block.mime_type}, {len(block.data.rstrip('=')) * 3 // 4} bytes]"
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, mcp_types.TextResourceContents):
            return resource.text
        return f"[resource {resource.uri}, {resource.mime_type or 'binary'}]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link {block.uri}]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _json_path(parts: Sequence[Any]) -> str:
    """`a.b[0]` from jsonschema's path parts."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")


@dataclass
class Connection:
    """One running server: its session, its stderr, and why it was lost, if it was."""

    server: MCPServer
    session: ClientSession
    stderr: IO[bytes]
    listing: list[mcp_types.Tool]
    lost: str | None = None


def stderr_tail(stderr: IO[bytes]) -> str:
    """'; its stderr ends with: ...' or '' (pread: the server shares the file offset)."""
    size = os.fstat(stderr.fileno()).st_size
    start = max(0, size - STDERR_TAIL)
    text = os.pread(stderr.fileno(), size - start, start).decode(errors="replace").strip()
    return f"; its stderr ends with:\n{text}" if text else ""


@dataclass
class MCPTool:
    """One tool of an MCP server, with the interface of `lmgym.envs.tools.Tool`."""

    listing: mcp_types.Tool
    connection: Connection
    validator: jsonschema.protocols.Validator = field(init=False, repr=False)

    def __post_init__(self):
        schema = self.listing.input_schema
        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolServerError(
                f"{self.connection.server} lists tool {self.name!r} with an invalid inputSchema: {exc.message}"
            ) from None
        self.validator = validator_class(schema)

    @property
    def name(self) -> str:
        return self.listing.name

    @cached_property
    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.listing.description or "",
                "parameters": {"type": "object", "properties": {}, **self.listing.input_schema},
            },
        }

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The arguments unchanged if the tool's inputSchema accepts them, else BadToolCall
        naming the first wrong argument."""
        if not isinstance(arguments, dict):
            raise BadToolCall(f"arguments must be a JSON object, got {type(arguments).__name__}")
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(arguments))
        if error is not None:
            where = f"argument {_json_path(error.absolute_path)!r}" if error.absolute_path else "arguments"
            raise BadToolCall(f"{where}: {error.message}")
        return arguments

    async def call(self, arguments: dict[str, Any], timeout: float) -> str:
        try:
            result = await asyncio.wait_for(self.connection.session.call_tool(self.name, arguments), timeout)
        except MCPError as exc:
            if exc.code == mcp_types.CONNECTION_CLOSED:
                self.connection.lost = str(exc)
            raise
        if result.is_error:
            raise MCPToolError(render(result) or "the server reported an error without a message")
        return render(result)


class MCPToolEnv(ToolEnv):
    """Tools listed from MCP servers at `start()`, alongside any plain Python `tools`."""

    def __init__(
        self,
        dataset: Any = None,
        eval_dataset: Any = None,
        *,
        servers: Sequence[MCPServer | Mapping[str, Any]],
        tools: Sequence[Any] = (),
        **kwargs: Any,
    ):
        self.servers = [as_server(spec, i) for i, spec in enumerate(servers)]
        if not self.servers:
            raise errors.UsageError("MCPToolEnv needs at least one server in `servers`")
        names = [s.name for s in self.servers]
        if len(set(names)) != len(names):
            raise errors.UsageError(f"MCP server names must be unique, got {names}")
        super().__init__(dataset, eval_dataset, tools=tools, **kwargs)
        self.local_tools = dict(self.toolbox)
        self.connections: list[Connection] = []
        self._owner: asyncio.Task | None = None  # holds the servers open from start() to stop()
        self._started: asyncio.Future[list[Connection]] | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Launch every server and list its tools; ToolServerError names the one that failed."""
        if self._owner is not None:
            raise ToolServerError(f"{type(self).__name__} is already started; call stop() first")
        self._stopping = asyncio.Event()
        self._started = asyncio.get_running_loop().create_future()
        self._owner = asyncio.create_task(self._serve(self._started), name=f"{type(self).__name__} servers")
        try:
            connections = await asyncio.shield(self._started)
            toolbox = dict(self.local_tools)
            for connection in connections:
                for tool in [MCPTool(listing, connection) for listing in connection.listing]:
                    if tool.name in toolbox:
                        raise ToolServerError(
                            f"{connection.server} offers tool {tool.name!r}, which is already "
                            f"{_origin(toolbox[tool.name])}; tool names must be unique across servers"
                        )
                    toolbox[tool.name] = tool
        except BaseException:
            await self.stop()
            raise
        self.connections = connections
        self.toolbox = toolbox
        self.tools = [t.schema for t in toolbox.values()]
        for name in toolbox:
            if f"calls_{name}" not in self.rubric.names:
                self.rubric.add(calls_of(name), weight=0.0)

    async def stop(self) -> None:
        """Close every server (the SDK kills what does not exit in time). Safe to call twice."""
        owner, self._owner = self._owner, None
        self.toolbox, self.connections = dict(self.local_tools), []
        self.tools = [t.schema for t in self.toolbox.values()]
        if owner is None:
            return
        self._stopping.set()
        if not self._started.done():  # start() itself was cancelled half-way
            owner.cancel()
        try:
            await asyncio.shield(owner)  # a cancelled caller still leaves the servers closing
        except asyncio.CancelledError:
            if not owner.done():
                raise
        except Exception:
            logger.exception("closing the MCP servers of %s failed", type(self).__name__)

    async def _serve(self, started: asyncio.Future) -> None:
        """Own the servers from start to stop, in this one task (anyio's rule)."""
        async with contextlib.AsyncExitStack() as stack:
            try:
                connections = [await _connect(stack, server) for server in self.servers]
            except Exception as exc:
                started.set_exception(exc)
                return
            started.set_result(connections)
            await self._stopping.wait()

    # -- the loop --------------------------------------------------------------------------
    async def rollout(self, *args: Any, **kwargs: Any) -> Rollout:
        """`Environment.rollout`, refused before `start()`: the model would see no tools."""
        if self._owner is None:
            raise ToolServerError(
                f"{type(self).__name__} has not started its MCP servers: run rollouts inside "
                "`async with env.running():` (or between `await env.start()` and `await env.stop()`)"
            )
        return await super().rollout(*args, **kwargs)

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        """ToolEnv's replies, unless a server died on the way: that stops the run (a fatal
        error out of the rollout), where tool messages would score the model for our crash."""
        replies = await super().env_response(messages, state)
        for connection in self.connections:
            if connection.lost:
                tail = stderr_tail(connection.stderr)
                raise ToolServerError(f"{connection.server} closed the connection mid-run ({connection.lost}){tail}")
        return replies


def _origin(tool: Any) -> str:
    return f"offered by {tool.connection.server}" if isinstance(tool, MCPTool) else "a Python tool"


async def _connect(stack: contextlib.AsyncExitStack, server: MCPServer) -> Connection:
    """Launch one server onto `stack`, handshake and list its tools, within its start_timeout."""
    stderr = stack.enter_context(tempfile.TemporaryFile())
    params = StdioServerParameters(command=server.command, args=list(server.args), env=dict(server.env), cwd=server.cwd)
    try:
        async with asyncio.timeout(server.start_timeout):
            read, write = await stack.enter_async_context(stdio_client(params, errlog=stderr))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            return Connection(server, session, stderr, await _list_tools(session))
    except TimeoutError:
        problem = f"{server} did not finish the MCP handshake within {server.start_timeout:g}s"
    except (OSError, MCPError) as exc:
        problem = f"could not start {server}: {exc}"
    raise ToolServerError(f"{problem}{stderr_tail(stderr)}")


async def _list_tools(session: ClientSession) -> list[mcp_types.Tool]:
    """Every page of the server's tool listing."""
    tools, cursor = [], None
    while True:
        page = await session.list_tools(params=mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools += page.tools
        if not (cursor := page.next_cursor):
            return tools
