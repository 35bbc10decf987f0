"""The trace record's `request`, `response` and `usage`, from the bodies that pass.

A reply is summarised the same way streamed or not (`response_record`), so that readers
of traces never need to know which it was.
"""

from __future__ import annotations

from typing import Any

NOT_SAMPLING = {"model", "messages", "prompt", "tools", "stream", "stream_options"}


def summarise_request(route: str, body: Any) -> dict[str, Any]:
    """The trace's `request`: model, messages or prompt, tools, and the sampling fields."""
    text_key = "messages" if route == "/chat/completions" else "prompt"
    if not isinstance(body, dict):
        return {"model": None, text_key: None, "tools": None, "sampling": {}}
    return {
        "model": body.get("model"),
        text_key: body.get(text_key),
        "tools": body.get("tools"),
        "sampling": {k: v for k, v in body.items() if k not in NOT_SAMPLING},
    }


def summarise_usage(usage: Any) -> dict[str, int] | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": _count(usage.get("total_tokens")) or prompt + completion}


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) else 0


def summarise_response(route: str, data: Any) -> tuple[dict[str, Any] | None, dict[str, int] | None]:
    """The trace's `response` and `usage` from a non-streamed JSON body."""
    if not isinstance(data, dict):
        return None, None
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    if route == "/chat/completions":
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        content, tool_calls, reasoning = message.get("content"), message.get("tool_calls") or None, reasoning_of(message)
    else:
        content, tool_calls, reasoning = choice.get("text"), None, None
    return response_record(data.get("model"), content, tool_calls, choice.get("finish_reason"), reasoning), summarise_usage(data.get("usage"))


def response_record(model: Any, content: Any, tool_calls: list | None, finish_reason: Any, reasoning: str | None) -> dict[str, Any]:
    """The trace's `response`, the same for a reply streamed or not: a reply of tool calls
    only has `content` null (servers stream it as "" or send nothing)."""
    if tool_calls and content == "":
        content = None
    return {"model": model, "content": content, "reasoning_content": reasoning, "tool_calls": tool_calls, "finish_reason": finish_reason}


def reasoning_of(message: dict[str, Any]) -> str | None:
    """A message's or delta's reasoning text: `reasoning_content` (vLLM's reasoning parsers,
    DeepSeek, llama.cpp), or `reasoning` (newer vLLM, OpenRouter)."""
    for key in ("reasoning_content", "reasoning"):
        if isinstance(message.get(key), str):
            return message[key]
    return None
