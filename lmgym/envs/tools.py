"""`ToolEnv`: plain Python functions become tools the model calls over many turns.

Each function's schema comes from its signature and docstring: type hints through
pydantic (`Literal` → enum, `Optional`, lists, pydantic models), argument descriptions
from a Google-style `Args:` or NumPy-style `Parameters` section. The episode ends when
the model answers without a tool call, or at `max_turns`.

The model's mistakes are data, not crashes: invalid JSON, an unknown tool, missing or
mistyped arguments, a tool that raises or outlasts `tool_timeout`, too many calls in one
turn: each comes back to the model as a tool message naming the problem, and is counted
in the metrics `tool_errors` and `tool_calls` (and `calls_<tool>` per tool). The calls
of one turn run concurrently.

`StatefulToolEnv` adds arguments the model never sees (a sandbox, a database handle),
filled from the rollout's state at call time.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pydantic

from lmgym import errors
from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.errors import BadToolCall
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Message, Messages, ToolCall

MAX_CALLS_PER_TURN = 16


def _doc_sections(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {argument: description}) from a Google- or NumPy-style docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    described: dict[str, str] = {}
    mode, current, arg_indent, i = "summary", None, None, 0
    while i < len(lines):
        line, text = lines[i], lines[i].strip()
        underlined = i + 1 < len(lines) and bool(text) and set(lines[i + 1].strip()) == {"-"}  # NumPy header
        if text in ("Args:", "Arguments:", "Parameters:") or (underlined and text == "Parameters"):
            mode, current, arg_indent = "args", None, None
        elif underlined or re.fullmatch(r"[A-Z][A-Za-z ]*:", text):
            mode = "other"
        elif mode == "summary" and text:
            summary.append(text)
        elif mode == "args" and text:
            indent = len(line) - len(line.lstrip())
            entry = re.match(r"^(\w+)(\s*\([^)]*\))?(\s*):\s*(.*)$", text)
            if entry and (arg_indent is None or indent <= arg_indent):
                arg_indent, current = indent, entry.group(1)
                # "name : type" (NumPy) has its text on the next lines; "name: text" (Google) here
                described[current] = "" if entry.group(3) else entry.group(4)
            elif current:
                described[current] = f"{described[current]} {text}".strip()
        i += 2 if underlined else 1
    return " ".join(summary), described


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def parse_arguments(raw: Any) -> Any:
    """A call's arguments: JSON text on the wire (some servers send the object itself)."""
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BadToolCall(f"arguments are not valid JSON ({exc.msg} at character {exc.pos})") from None


@dataclass
class Tool:
    """A Python function with the schema the model sees and a validator for its arguments.

    `hidden` parameters are the environment's to fill (a sandbox, a database handle):
    they are left out of the schema, and the model may not pass them."""

    func: Callable[..., Any]
    hidden: frozenset[str] = frozenset()

    @cached_property
    def name(self) -> str:
        return self.func.__name__

    @cached_property
    def parameters(self) -> dict[str, inspect.Parameter]:
        """The parameters the model sees."""
        signature = inspect.signature(self.func).parameters
        return {name: p for name, p in signature.items() if name not in self.hidden}

    @cached_property
    def hidden_parameters(self) -> list[str]:
        """The hidden parameters this function really takes."""
        return [name for name in inspect.signature(self.func).parameters if name in self.hidden]

    @cached_property
    def adapters(self) -> dict[str, pydantic.TypeAdapter]:
        hints = inspect.get_annotations(self.func, eval_str=True)
        return {name: pydantic.TypeAdapter(hints.get(name, Any)) for name in self.parameters}

    @cached_property
    def schema(self) -> dict[str, Any]:
        description, arg_docs = _doc_sections(self.func.__doc__ or "")
        properties, required = {}, []
        for name, param in self.parameters.items():
            prop = self.adapters[name].json_schema()
            if arg_docs.get(name):
                prop["description"] = arg_docs[name]
            properties[name] = prop
            if param.default is inspect.Parameter.empty:
                required.append(name)
            elif _is_json(param.default):
                prop["default"] = param.default
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": description,
                "parameters": {"type": "object", "properties": properties, "required": required},
            },
        }

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Checked, converted keyword arguments, or BadToolCall saying what is wrong."""
        if not isinstance(arguments, dict):
            raise BadToolCall(f"arguments must be a JSON object, got {type(arguments).__name__}")
        unknown = sorted(set(arguments) - set(self.parameters))
        if unknown:
            raise BadToolCall(f"unknown argument(s) {unknown}; {self.name} takes {list(self.parameters)}")
        missing = [n for n, p in self.parameters.items() if p.default is inspect.Parameter.empty and n not in arguments]
        if missing:
            raise BadToolCall(f"missing required argument(s) {missing}")
        checked = {}
        for name, value in arguments.items():
            try:
                checked[name] = self.adapters[name].validate_python(value)
            except pydantic.ValidationError as exc:
                problem = exc.errors()[0]["msg"]
                raise BadToolCall(f"argument {name!r}={value!r}: {problem}") from None
        return checked

    async def call(self, arguments: dict[str, Any], timeout: float) -> str:
        if inspect.iscoroutinefunction(self.func):
            result = await asyncio.wait_for(self.func(**arguments), timeout)
        else:
            result = await asyncio.wait_for(asyncio.to_thread(self.func, **arguments), timeout)
        return result if isinstance(result, str) else json.dumps(result, default=str)


def _total(key: str) -> Callable[..., float]:
    """A weight-0 rubric function logging `state[key]` (a metric, not a reward)."""

    def total(state) -> float:
        return float(state.get(key, 0))

    total.__name__ = key
    return total


def calls_of(tool: str) -> Callable[..., float]:
    """A weight-0 rubric function logging how often `tool` was called."""

    def calls(state) -> float:
        return float(state.get("calls", {}).get(tool, 0))

    calls.__name__ = f"calls_{tool}"
    return calls


class ToolEnv(MultiTurnEnv):
    def __init__(
        self,
        *args: Any,
        tools: Sequence[Callable[..., Any]],
        tool_timeout: float = 30.0,
        max_calls_per_turn: int = MAX_CALLS_PER_TURN,
        rubric: Rubric | None = None,
        **kwargs: Any,
    ):
        self.toolbox = {t.name: t for t in (self.make_tool(f) for f in tools)}
        if len(self.toolbox) != len(tools):
            raise ValueError("two tools share a name")
        self.tool_timeout = tool_timeout
        self.max_calls_per_turn = max_calls_per_turn
        rubric = rubric or Rubric(parser=kwargs.get("parser"))
        for metric in [_total("tool_calls"), _total("tool_errors"), *map(calls_of, self.toolbox)]:
            rubric.add(metric, weight=0.0)
        super().__init__(*args, rubric=rubric, tools=[t.schema for t in self.toolbox.values()], **kwargs)

    def make_tool(self, func: Callable[..., Any]) -> Tool:
        return Tool(func)

    def hidden_arguments(self, tool: Tool, state: dict[str, Any]) -> dict[str, Any]:
        """Arguments the environment adds to the model's (none for a plain ToolEnv)."""
        return {}

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        last = messages[-1]
        return last["role"] == "assistant" and not last.get("tool_calls")

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        calls = messages[-1].get("tool_calls") or []
        calls = [c if isinstance(c, dict) else {} for c in (calls if isinstance(calls, list) else [calls])]  # malformed: answered as bad calls
        replies = await asyncio.gather(*(self._run(call, i, state) for i, call in enumerate(calls)))
        return list(replies)

    async def _run(self, call: ToolCall, position: int, state: dict[str, Any]) -> Message:
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        name = name if isinstance(name, str) else ""
        state["tool_calls"] = state.get("tool_calls", 0) + 1
        try:
            if position >= self.max_calls_per_turn:
                raise BadToolCall(f"too many tool calls in one turn: at most {self.max_calls_per_turn} are run")
            tool = self.toolbox.get(name)
            if tool is None:
                raise BadToolCall(f"unknown tool {name!r}; available: {sorted(self.toolbox)}")
            state.setdefault("calls", {})[name] = state.get("calls", {}).get(name, 0) + 1
            arguments = {**tool.validate(parse_arguments(function.get("arguments"))), **self.hidden_arguments(tool, state)}
            content = await tool.call(arguments, self.tool_timeout)
        except BadToolCall as exc:
            content = self._error(state, str(exc))
        except TimeoutError:
            content = self._error(state, f"{name} did not return within {self.tool_timeout:g}s")
        except Exception as exc:
            if errors.passes_through(exc):
                raise  # the environment's own fault, not the model's: the rollout records it
            content = self._error(state, f"{name} raised {type(exc).__name__}: {exc}")  # the tool failed: the model sees why
        return {"role": "tool", "tool_call_id": call.get("id", ""), "content": content}

    @staticmethod
    def _error(state: dict[str, Any], text: str) -> str:
        state["tool_errors"] = state.get("tool_errors", 0) + 1
        return f"Error: {text}"


class StatefulToolEnv(ToolEnv):
    """A ToolEnv whose tools also take arguments from the rollout's state.

    Parameters named in `hidden_args` are left out of every schema and filled at call
    time by `hidden_value(name, state)`, by default `state[name]`: `setup_state` puts a
    sandbox or a database handle there, and the model never sees or forges it.
    """

    def __init__(self, *args: Any, tools: Sequence[Callable[..., Any]], hidden_args: Sequence[str] = (), **kwargs: Any):
        self.hidden_args = frozenset(hidden_args)
        super().__init__(*args, tools=tools, **kwargs)

    def make_tool(self, func: Callable[..., Any]) -> Tool:
        return Tool(func, hidden=self.hidden_args)

    def hidden_value(self, name: str, state: dict[str, Any]) -> Any:
        if name not in state:
            raise errors.EnvironmentHookError(
            f"{type(self).__name__}: state has no {name!r} for the hidden tool argument; set it in setup_state"
        )
        return state[name]

    def hidden_arguments(self, tool: Tool, state: dict[str, Any]) -> dict[str, Any]:
        return {name: self.hidden_value(name, state) for name in tool.hidden_parameters}
