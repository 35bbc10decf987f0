"""Tool-call formats: the text a model writes to call a tool, read back into OpenAI-style calls.

A server that serves a model for evaluation parses its tool calls itself (vLLM's tool
parsers, llama.cpp's chat formats). Training samples tokens in lmgym's own engines, so
lmgym reads them here, and a model's sampled reply reaches the environment as the same
`{"content", "tool_calls"}` message that evaluation gives it.

Formats, named as in `model.tool_format`:

- `hermes` (Hermes, Qwen2.5, lmgym's `chatml-tools` template):
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call.
- `qwen3`: `hermes`, and a leading `<think>...</think>` goes to `reasoning_content`.
- `llama3` (Llama 3.1-3.3): a reply that is a JSON object `{"name": ..., "parameters":
  {...}}`, optionally after `<|python_tag|>`, several separated by `;`.
- `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`, or the newer
  `[TOOL_CALLS]name[ARGS]{...}`.

A call the format cannot read (broken JSON, a reply cut off mid-call) is still returned
as a call, its raw text as the arguments, so the environment answers it as a bad call
(`arguments are not valid JSON`) exactly as in evaluation, and the turn is not lost.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')


@dataclass
class ParsedCall:
    name: str
    arguments: str  # JSON text of an object when readable, else the raw text the model wrote
    readable: bool = True


@dataclass
class ParsedReply:
    content: str
    tool_calls: list[ParsedCall] = field(default_factory=list)
    reasoning: str | None = None


def _call_from_json(text: str, arguments_key: str = "arguments") -> ParsedCall:
    """One call from the JSON text of `{"name": ..., "<arguments_key>": {...}}`."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return _call_from_value(value, text, arguments_key)


def _call_from_value(value: Any, text: str, arguments_key: str = "arguments") -> ParsedCall:
    """One call from a decoded `value`; `text` is what the model wrote, kept as the
    arguments of a call that is not `{"name": ..., ...}`."""
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        arguments = value.get(arguments_key, value.get("arguments", {}))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            return ParsedCall(value["name"], arguments, _is_json_object(arguments))
        return ParsedCall(value["name"], json.dumps(arguments, ensure_ascii=False), isinstance(arguments, dict))
    name = _NAME.search(text)
    return ParsedCall(name.group(1) if name else "", text.strip(), False)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def split_reasoning(text: str) -> tuple[str | None, str]:
    """(reasoning, rest) for a reply that opens with a think block; (None, text) otherwise."""
    stripped = text.lstrip()
    if not stripped.startswith(THINK_OPEN):
        return None, text
    body = stripped[len(THINK_OPEN):]
    if THINK_CLOSE not in body:
        return body.strip(), ""
    reasoning, rest = body.split(THINK_CLOSE, 1)
    return reasoning.strip(), rest.lstrip()


class ToolFormat:
    """Reads one family's tool calls out of a sampled reply."""

    name = ""
    marker = ""  # text that only this format's calls contain (detection from a template)
    keeps: tuple[str, ...] = ()  # its markers, kept when special tokens are stripped from a reply

    def parse(self, text: str) -> ParsedReply:
        raise NotImplementedError


class HermesFormat(ToolFormat):
    name, marker = "hermes", "<tool_call>"
    OPEN, CLOSE = "<tool_call>", "</tool_call>"
    keeps = (OPEN, CLOSE)

    def parse(self, text: str) -> ParsedReply:
        if self.OPEN not in text:
            return ParsedReply(text)
        content, rest = text.split(self.OPEN, 1)
        calls = []
        for block in rest.split(self.OPEN):
            body, closed, _ = block.partition(self.CLOSE)
            call = _call_from_json(body.strip())
            call.readable = call.readable and bool(closed)  # cut off before </tool_call>
            calls.append(call)
        return ParsedReply(content.strip(), calls)


class Qwen3Format(HermesFormat):
    name = "qwen3"
    keeps = (*HermesFormat.keeps, THINK_OPEN, THINK_CLOSE)

    def parse(self, text: str) -> ParsedReply:
        reasoning, rest = split_reasoning(text)
        reply = super().parse(rest)
        reply.reasoning = reasoning
        return reply


class Llama3Format(ToolFormat):
    name, marker = "llama3", "<|python_tag|>"
    PYTHON_TAG = "<|python_tag|>"
    keeps = (PYTHON_TAG,)

    def parse(self, text: str) -> ParsedReply:
        body = text.strip()
        tagged = body.startswith(self.PYTHON_TAG)
        body = body.removeprefix(self.PYTHON_TAG).strip()
        if not body.startswith("{"):
            return ParsedReply(text)
        calls, decoder, position = [], json.JSONDecoder(), 0
        while position < len(body):
            try:
                value, end = decoder.raw_decode(body, position)
            except ValueError:
                calls.append(_call_from_json(body[position:], "parameters"))
                break
            if not (isinstance(value, dict) and "name" in value and ("parameters" in value or "arguments" in value)):
                if not tagged and not calls:
                    return ParsedReply(text)  # a JSON answer, not a call
                calls.append(_call_from_json(body[position:end], "parameters"))
            else:
                calls.append(_call_from_value(value, json.dumps(value), "parameters"))
            position = end
            while position < len(body) and body[position] in "; \n\t":
                position += 1
        return ParsedReply("", calls)


class MistralFormat(ToolFormat):
    name, marker = "mistral", "[TOOL_CALLS]"
    TAG, ARGS = "[TOOL_CALLS]", "[ARGS]"
    keeps = (TAG, ARGS)

    def parse(self, text: str) -> ParsedReply:
        if self.TAG not in text:
            return ParsedReply(text)
        content, rest = text.split(self.TAG, 1)
        rest = rest.strip()
        if rest.startswith("["):  # v3: a JSON list of calls
            try:
                values = json.loads(rest)
            except ValueError:
                return ParsedReply(content.strip(), [_call_from_json(rest)])
            calls = [_call_from_value(v, json.dumps(v)) for v in (values if isinstance(values, list) else [values])]
            return ParsedReply(content.strip(), calls)
        calls = []
        for block in rest.split(self.TAG):  # v11: name[ARGS]{...} per call
            name, has_args, arguments = block.partition(self.ARGS)
            arguments = arguments.strip()
            calls.append(ParsedCall(name.strip(), arguments, bool(has_args) and _is_json_object(arguments)))
        return ParsedReply(content.strip(), calls)


FORMATS: dict[str, ToolFormat] = {f.name: f for f in (HermesFormat(), Qwen3Format(), Llama3Format(), MistralFormat())}


def tool_format(name: str) -> ToolFormat:
    """The format called `name`; ValueError listing the known ones otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown tool format {name!r}; known: {', '.join(FORMATS)}") from None


def detect_tool_format(template: str | None) -> ToolFormat | None:
    """The format a chat template writes tool calls in, read from the markers it contains
    (a template with `<think>` and `<tool_call>` is qwen3); None when it has none of them."""
    template = template or ""
    if HermesFormat.marker in template:
        return FORMATS["qwen3" if THINK_OPEN in template else "hermes"]
    if MistralFormat.marker in template:
        return FORMATS["mistral"]
    if Llama3Format.marker in template or ("tool_call" in template and "parameters" in template and "<|eot_id|>" in template):
        return FORMATS["llama3"]
    return None


def openai_tool_calls(calls: list[ParsedCall], first_id: int) -> list[dict[str, Any]]:
    """OpenAI-style tool calls, with ids `call00001`... (nine letters and digits: Mistral's
    templates refuse any other id) numbered from `first_id`."""
    return [
        {"id": f"call{first_id + k:05d}", "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for k, c in enumerate(calls)
    ]
