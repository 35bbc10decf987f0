"""verifiers' typed messages and lmgym's chat messages, each way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmgym.types import Message, Messages


def task_prompt(data: Any) -> Messages:
    """The messages a task opens with: its system prompt, then its prompt (text or messages)."""
    from verifiers.v1.dialects.chat import message_to_wire

    prompt = data.prompt
    if prompt is None:
        messages = []
    elif isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [message_to_wire(m) for m in prompt]
    system = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    return [*system, *messages]


def turn_messages(message: Any) -> Messages:
    """What `Interaction.turn` accepts (a string, wire dicts or typed messages) as wire dicts."""
    from verifiers.v1.dialects.chat import message_to_wire

    if message is None:
        return []
    if isinstance(message, str):
        return [{"role": "user", "content": message}]
    return [dict(m) if isinstance(m, Mapping) else message_to_wire(m) for m in message]


def typed_message(message: Message) -> Any:
    """A wire message as verifiers' typed one; a malformed tool call keeps its text only
    (lmgym answers it as a bad call, and the trace must still hold the turn)."""
    from verifiers.v1 import AssistantMessage
    from verifiers.v1.dialects.chat import parse_message

    try:
        return parse_message(dict(message))
    except (KeyError, TypeError, ValueError):
        return AssistantMessage(content=str(message.get("content") or ""))
