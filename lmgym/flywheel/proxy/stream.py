"""Server-sent events as they pass: a streamed reply assembled for the trace, and the
stream cut into whole events for the client.

The proxy relays a stream event by event while `StreamAssembler` rebuilds the reply from
the same bytes; relaying whole events only is what lets the key be scrubbed from each.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from lmgym.flywheel.proxy.record import reasoning_of, response_record, summarise_usage

logger = logging.getLogger(__name__)


class StreamAssembler:
    """Rebuilds a streamed (SSE) completion from the bytes as they pass: feed, then result."""

    def __init__(self, route: str):
        self.chat = route == "/chat/completions"
        self._buffer = b""
        self._data: list[bytes] = []  # the data lines of the event being read
        self.model: str | None = None
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.error: Any = None
        self.done = False  # [DONE] seen

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if not line:
                self._dispatch()
            elif line.startswith(b"data:"):
                self._data.append(line[5:].strip())

    def result(self) -> tuple[dict[str, Any], dict[str, int] | None]:
        self.feed(b"\n\n")  # a last event without its blank line
        calls = [_complete_call(self.tool_calls[i]) for i in sorted(self.tool_calls)] or None
        reasoning = "".join(self.reasoning) if self.reasoning else None
        return response_record(self.model, "".join(self.parts), calls, self.finish_reason, reasoning), self.usage

    def _dispatch(self) -> None:
        data, self._data = b"\n".join(self._data), []
        if data == b"[DONE]":
            self.done = True
        if not data or self.done:
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(event, dict):
            return
        if event.get("error"):
            self.error = event
        self.model = event.get("model") or self.model
        if event.get("usage"):
            self.usage = summarise_usage(event["usage"])
        try:
            for choice in event.get("choices") or ():
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    self._add_choice(choice)
        except (AttributeError, TypeError) as exc:  # an odd event must never break the stream itself
            logger.debug("unexpected stream event shape, not recorded: %s", exc)

    def _add_choice(self, choice: dict[str, Any]) -> None:
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        if not self.chat:
            if isinstance(choice.get("text"), str):
                self.parts.append(choice["text"])
            return
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            self.parts.append(delta["content"])
        if (reasoning := reasoning_of(delta)) is not None:
            self.reasoning.append(reasoning)
        for fragment in delta.get("tool_calls") or ():
            self._add_tool_call_fragment(fragment)

    def _add_tool_call_fragment(self, fragment: dict[str, Any]) -> None:
        """Merged by index: id, type and name are set by the first fragment that has them
        (OpenAI sends them once, llama.cpp in every fragment); arguments are concatenated."""
        call = self.tool_calls.setdefault(
            fragment.get("index", 0), {"id": None, "type": None, "function": {"name": None, "arguments": ""}}
        )
        function = fragment.get("function") or {}
        call["id"] = call["id"] or fragment.get("id")
        call["type"] = call["type"] or fragment.get("type")
        call["function"]["name"] = call["function"]["name"] or function.get("name")
        call["function"]["arguments"] += function.get("arguments") or ""


def _complete_call(call: dict[str, Any]) -> dict[str, Any]:
    """A streamed tool call in the wire format, whatever fragments it lacked."""
    return {"id": call["id"], "type": call["type"] or "function",
            "function": {"name": call["function"]["name"] or "", "arguments": call["function"]["arguments"]}}


def split_after_last_event(data: bytes) -> tuple[bytes, bytes]:
    """`data` of an SSE stream cut after its last complete event (one ending in a blank
    line): what can go to the client now, and the start of an event still arriving.
    Relaying whole events only means the key can be scrubbed from each (it cannot hide
    across a network chunk) and a stream that breaks off never leaves half an event."""
    end = max((i + len(blank) for blank in (b"\n\n", b"\n\r\n") if (i := data.rfind(blank)) != -1), default=0)
    return data[:end], data[end:]

