"""Reading trace files, checking each trace's shape, and choosing the traces that become data.

Everything that decides whether a recorded exchange is kept, and counts why not, is here:
the reasons are the ones `lmgym traces` reports (`DROP_REASONS`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import orjson

from lmgym import errors
from lmgym.flywheel.traces.messages import NonTextContent, normalise_message, reply_message
from lmgym.types import Message, Messages

logger = logging.getLogger(__name__)

TRACE_FILE = re.compile(r"traces-(\d+)\.jsonl")
CHAT_ENDPOINT = "/v1/chat/completions"
DROP_REASONS = {
    "malformed": "malformed lines or fields",
    "error": "HTTP errors and broken streams",
    "not_chat": "/v1/completions (not chat)",
    "empty": "empty replies",
    "non_text": "image or audio content",
    "session": "other sessions (--session)",
    "model": "other models (--model)",
    "date": "outside --since/--until",
    "finish_reason": "other finish reasons (--finish-reason)",
    "duplicate": "duplicates",
    "rescore_error": "re-scoring failed",
    "below_min_reward": "reward below --min-reward",
}


class MalformedTrace(ValueError):
    """A trace that is valid JSON but holds a field of the wrong type; says which field.

    Such traces are dropped rather than mended: a row with a list where other rows have a
    string would end up in the dataset as it is (JSONL), or break the Arrow formats."""


# ------------------------------------------------------------------------------ reading


def trace_files(paths: Sequence[Path | str]) -> list[Path]:
    """The trace files named: files as given, folders' `traces-NNNNN.jsonl` in order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = [(int(m.group(1)), p) for p in path.iterdir() if (m := TRACE_FILE.fullmatch(p.name))]
            if not found:
                raise errors.UsageError(f"{path} holds no traces-NNNNN.jsonl files; is it the folder of `lmgym proxy`?")
            files.extend(p for _, p in sorted(found))
        elif path.is_file():
            files.append(path)
        else:
            raise errors.UsageError(f"no such trace file or folder: {path}")
    return files


@dataclass
class Counts:
    """What `select_traces` read and why it dropped what it dropped."""

    files: int = 0
    read: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "read": self.read, "kept": self.kept, "dropped": dict(self.dropped)}


def read_traces(files: Iterable[Path], counts: Counts) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every trace of the files, in order, with where it is (`FILE:LINE`); a line that is
    not a JSON object is counted as malformed and skipped (the proxy may be writing the
    last line right now)."""
    for path in files:
        counts.files += 1
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            counts.read += 1
            try:
                trace = orjson.loads(line)
            except orjson.JSONDecodeError:
                trace = None
            if not isinstance(trace, dict) or not isinstance(trace.get("request"), dict):
                torn = number == len(lines)  # no newline after it: a write in progress, or a crash
                logger.log(logging.DEBUG if torn else logging.WARNING, "%s:%d: not a trace, skipped", path, number)
                counts.drop("malformed")
                continue
            yield f"{path}:{number}", trace


# -------------------------------------------------------------------------------- shape

JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}


def expect(value: Any, kind: type | tuple[type, ...], where: str, *, required: bool = False) -> Any:
    """`value` when it is of `kind` (or null, unless required); else MalformedTrace naming
    `where`. A boolean is not a number here (JSON keeps them apart; Python does not)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (value is None and not required) or (isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))):
        return value
    wanted = " or ".join(dict.fromkeys(JSON_KINDS[k] for k in kinds))
    found = JSON_KINDS.get(type(value), type(value).__name__)
    text = orjson.dumps(value, default=str).decode()
    shown = text if len(text) <= 80 else text[:80] + "…"
    raise MalformedTrace(f"{where} is {found} ({shown}), expected {wanted}")


def check_tool_calls(calls: Any, where: str) -> None:
    for i, call in enumerate(expect(calls, list, where) or []):
        expect(call, dict, f"{where}[{i}]", required=True)
        expect(call.get("id"), str, f"{where}[{i}].id")
        function = expect(call.get("function"), dict, f"{where}[{i}].function", required=True)
        expect(function.get("name"), str, f"{where}[{i}].function.name", required=True)
        expect(function.get("arguments"), str, f"{where}[{i}].function.arguments")


def check_message(message: Any, where: str) -> None:
    """The keys a chat template reads have the types it expects; content parts other than
    text are left to `text_of` (they are dropped as non_text, not malformed)."""
    expect(message, dict, where, required=True)
    if "role" not in message:
        raise MalformedTrace(f"{where} has no role")
    expect(message["role"], str, f"{where}.role", required=True)
    expect(message.get("content"), (str, list), f"{where}.content")
    check_tool_calls(message.get("tool_calls"), f"{where}.tool_calls")
    for key in ("tool_call_id", "name", "reasoning_content"):
        expect(message.get(key), str, f"{where}.{key}")


def check_envelope(trace: Mapping[str, Any]) -> None:
    """MalformedTrace naming the first field of the exchange's record (as the proxy writes
    it) whose type is wrong: these decide whether a trace is an error or a chat exchange,
    so a wrong type would otherwise be counted under the wrong reason, or kept."""
    expect(trace.get("endpoint"), str, "endpoint")
    expect(trace.get("stream"), bool, "stream")
    expect(trace.get("status"), int, "status")
    expect(trace.get("response"), dict, "response")
    expect(trace.get("usage"), dict, "usage")
    expect(trace.get("error"), dict, "error")


def check_trace(trace: Mapping[str, Any]) -> None:
    """MalformedTrace naming the first field a row would copy whose type is wrong."""
    expect(trace.get("id"), str, "id")
    expect(trace.get("session_id"), str, "session_id")
    expect(trace.get("started_at"), (int, float), "started_at")
    request, response = trace["request"], trace["response"]
    expect(request.get("model"), str, "request.model")
    for i, tool in enumerate(expect(request.get("tools"), list, "request.tools") or []):
        expect(tool, dict, f"request.tools[{i}]", required=True)
    if not request["messages"]:
        raise MalformedTrace("request.messages is empty")
    for i, message in enumerate(request["messages"]):
        check_message(message, f"request.messages[{i}]")
    expect(response.get("model"), str, "response.model")
    expect(response.get("content"), (str, list), "response.content")
    expect(response.get("reasoning_content"), str, "response.reasoning_content")
    check_tool_calls(response.get("tool_calls"), "response.tool_calls")
    expect(response.get("finish_reason"), str, "response.finish_reason")


# ----------------------------------------------------------------------------- filtering


def parse_when(text: str, *, end: bool = False) -> float:
    """Unix time of an ISO date or date-time (UTC unless it names a zone). With `end`, a
    bare date means the end of that day, so `--until 2025-01-31` includes the 31st."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise errors.UsageError(f"{text!r} is not an ISO date like 2025-01-31 or 2025-01-31T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    if end and len(text.strip()) == 10:  # a bare date: up to the next midnight
        when = datetime.combine(when.date() + timedelta(days=1), datetime.min.time(), tzinfo=when.tzinfo)
        return when.timestamp() - 1e-6
    return when.timestamp()


@dataclass(frozen=True)
class TraceFilter:
    """Which traces to keep; an empty set means any."""

    sessions: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    finish_reasons: frozenset[str] = frozenset()
    since: float | None = None
    until: float | None = None
    dedupe: bool = True

    def reject(self, trace: Mapping[str, Any]) -> str | None:
        """The user filter that drops `trace`, or None."""
        response = trace.get("response") or {}
        if self.sessions and trace.get("session_id") not in self.sessions:
            return "session"
        if self.models and not {trace["request"].get("model"), response.get("model")} & self.models:
            return "model"
        started = trace.get("started_at")
        if (self.since is not None or self.until is not None) and not isinstance(started, (int, float)):
            return "date"
        if (self.since is not None and started < self.since) or (self.until is not None and started > self.until):
            return "date"
        if self.finish_reasons and response.get("finish_reason") not in self.finish_reasons:
            return "finish_reason"
        return None


@dataclass
class Selected:
    """One kept trace: the conversation it recorded, ready to become a row."""

    trace: dict[str, Any]
    prompt: Messages
    completion: Message
    reward: float | None = None

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        return self.trace["request"].get("tools") or None


def usable(trace: Mapping[str, Any]) -> tuple[Messages, Message] | str:
    """(prompt, reply) of a trace, or why it cannot become data; MalformedTrace when a
    field has the wrong type."""
    check_envelope(trace)
    response, status = trace.get("response"), trace.get("status")
    if trace.get("error") or response is None or (status is not None and status >= 400):
        return "error"
    if (trace.get("endpoint") or CHAT_ENDPOINT) != CHAT_ENDPOINT:
        return "not_chat"
    messages = expect(trace["request"].get("messages"), list, "request.messages", required=True)
    check_trace(trace)
    if not response.get("content") and not response.get("tool_calls"):
        return "empty"
    try:
        prompt = [normalise_message(m) for m in messages]
        reply = normalise_message(reply_message(response))
    except NonTextContent:
        return "non_text"
    return prompt, reply


def dedupe_key(prompt: Messages, completion: Message, tools: Any) -> bytes:
    return orjson.dumps([prompt, completion, tools], option=orjson.OPT_SORT_KEYS)


def select_traces(traces: Iterable[tuple[str, dict[str, Any]]], flt: TraceFilter, counts: Counts) -> list[Selected]:
    """The traces (with where each is, from `read_traces`) that can become data and pass
    the filters, duplicates dropped."""
    kept, seen = [], set()
    for where, trace in traces:
        try:
            found = usable(trace)
        except MalformedTrace as exc:
            logger.warning("%s: %s; trace skipped", where, exc)
            found = "malformed"
        reason = found if isinstance(found, str) else flt.reject(trace)
        if reason is None:
            prompt, reply = found
            key = dedupe_key(prompt, reply, trace["request"].get("tools") or None)
            if flt.dedupe and key in seen:
                reason = "duplicate"
            seen.add(key)
        if reason is not None:
            counts.drop(reason)
            continue
        kept.append(Selected(trace, prompt, reply))
    counts.kept = len(kept)
    return kept
