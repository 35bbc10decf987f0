"""A verifiers `Toolset`'s `@vf.tool` methods as functions lmgym's tool loop offers the model."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from lmgym import errors
from lmgym.envs.verifiers_env.constants import EPISODE
from lmgym.envs.verifiers_env.episode import Episode


def tool_name(server: Any, method: Callable[..., Any]) -> str:
    """`<server>_<tool>`, as verifiers' chat program advertises MCP tools."""
    name = getattr(method, "tool_name", None) or method.__name__
    return f"{server.server_name}_{name}" if server.server_name else name


def tool_function(server_key: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A function lmgym's `StatefulToolEnv` offers: the toolset method's own parameters and
    docstring, plus the hidden rollout it finds its toolset instance and state in."""
    from verifiers.v1.mcp.server import _call_state  # the state a tool's `self.state` reads

    attr = method.__name__

    async def call(vf_episode: Episode, **arguments: Any) -> Any:
        instance = vf_episode.toolsets[server_key]
        token = _call_state.set(vf_episode.trace.state)
        try:
            result = getattr(instance, attr)(**arguments)
            return await result if inspect.isawaitable(result) else result
        finally:
            _call_state.reset(token)

    signature = inspect.signature(method)
    hidden = inspect.Parameter(EPISODE, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    call.__signature__ = signature.replace(parameters=[hidden, *signature.parameters.values()])
    call.__annotations__ = {k: v for k, v in typing.get_type_hints(method).items() if k != "return"}
    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


def toolset_tools(key: str, server: Any) -> list[Callable[..., Any]]:
    """The `@vf.tool` methods of one toolset, as lmgym tool functions."""
    from verifiers.v1.utils.decorators import discover_decorated

    if getattr(server.config, "url", None):
        raise errors.UsageError(f"toolset {type(server).__name__} is a remote server ({server.config.url}); lmgym runs toolsets in process")
    return [tool_function(key, tool_name(server, fn), fn) for fn in discover_decorated(server, "tool")]
