"""The text of chat messages, transcripts and completions: every helper, once.

Parsers, rubrics, judges, guards, the audit, traces and the test server all need "the
text of this message" or "the last reply"; they read it here so that content parts, tool
calls and missing content are treated alike everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from lmgym.types import Messages


def content_text(content: Any) -> str:
    """Message content as text: a string as it is, the text parts of a list joined, None as ""."""
    if isinstance(content, list):  # content parts
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, Mapping))
    return content if isinstance(content, str) else ""


def message_text(message: Mapping[str, Any]) -> str:
    return content_text(message.get("content"))


def last_text(messages: Messages, role: str) -> str:
    """The text of the last message with `role`; "" when there is none."""
    for message in reversed(messages):
        if message.get("role") == role:
            return message_text(message)
    return ""


def last_assistant_text(completion: str | Messages) -> str | None:
    """The text of the last assistant message (or the string itself); None if there is none."""
    if isinstance(completion, str):
        return completion
    for message in reversed(completion):
        if message.get("role") == "assistant":
            return message_text(message)
    return None


def assistant_contents(completion: str | Messages) -> list[str | None]:
    """The content of every assistant reply in order (a bare string counts as one reply);
    a reply that is only tool calls has no text to format and is left out."""
    if isinstance(completion, str):
        return [completion]
    return [m.get("content") for m in completion if m.get("role") == "assistant" and (m.get("content") or not m.get("tool_calls"))]


def completion_text(completion: str | Messages) -> str:
    """Every assistant reply of a completion, joined by newlines (a string is itself)."""
    return "\n".join(c for c in assistant_contents(completion) if isinstance(c, str) and c)


def prompt_text(prompt: str | Messages | Any) -> str:
    """The text of every prompt message (system and user alike), joined by newlines."""
    if isinstance(prompt, str):
        return prompt
    if not isinstance(prompt, list):
        return ""
    return "\n".join(m["content"] for m in prompt if isinstance(m, dict) and isinstance(m.get("content"), str))


def render_transcript(messages: Messages) -> str:
    """Messages as plain text for a judge: roles, tool calls and tool results."""
    lines = []
    for message in messages:
        text = message_text(message)
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            text += f"\n[calls {function.get('name')}({function.get('arguments')})]"
        lines.append(f"{message.get('role', '?').upper()}: {text.strip()}")
    return "\n\n".join(lines)


def last_user_text(request: Mapping[str, Any]) -> str:
    """The text of the last user message of a chat request."""
    return last_text(request.get("messages") or [], "user")
