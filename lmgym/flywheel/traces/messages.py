"""Messages as a text dataset keeps them: the chat-template keys, content as text.

Shared by the trace reader, the dataset writer and reader, the replay environment and
`lmgym.flywheel.distill`, so that every dataset the flywheel makes holds messages alike.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from lmgym.types import Message

# reasoning_content (vLLM's reasoning parser, reasoning APIs) is kept: it is the training
# data of reasoning models; templates that do not know it ignore it.
MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content")


class NonTextContent(ValueError):
    """A message holds image or audio parts, which a text dataset cannot keep."""


def text_of(content: Any) -> str | None:
    """Message content as text: a list of text parts is joined; other parts are refused."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        if all(isinstance(p, Mapping) and p.get("type") == "text" for p in content):
            return "".join(str(p.get("text") or "") for p in content)
        raise NonTextContent("content parts other than text")
    return str(content)


def normalise_message(message: Mapping[str, Any]) -> Message:
    """The chat-template keys of a message, content as text (see the package docstring)."""
    out: dict[str, Any] = {"role": "system" if message.get("role") == "developer" else message.get("role")}
    out["content"] = text_of(message.get("content"))
    for key in MESSAGE_KEYS[2:]:
        if message.get(key):
            out[key] = message[key]
    return out  # type: ignore[return-value]


def clean_message(message: Mapping[str, Any]) -> Message:
    """A message read back from Arrow: the null keys it never had removed."""
    return {k: v for k, v in message.items() if v is not None or k == "content"}  # type: ignore[return-value]


def reply_message(response: Mapping[str, Any]) -> Message:
    """The recorded reply as an assistant message."""
    message: dict[str, Any] = {"role": "assistant", "content": response.get("content")}
    for key in ("tool_calls", "reasoning_content"):
        if response.get(key):
            message[key] = response[key]
    return message  # type: ignore[return-value]


def tools_text(tools: Any) -> str | None:
    return json.dumps(tools, ensure_ascii=False) if tools else None
