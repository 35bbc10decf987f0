"""Recorded traffic into datasets: chat SFT rows, or an environment `lmgym eval` can run.

Traces are the JSON lines `lmgym.flywheel.proxy` writes (its docstring is the format).
`select_traces` reads them, drops what cannot or should not become data, and counts why:

    malformed       a line that is not a trace (a torn last line, an edited file), or a
                    trace with a field of the wrong type (a list for `model`, a string
                    for `tool_calls`, a message without a `role`): a warning names the
                    file, line and field
    error           an HTTP error, or a stream that broke (its reply is partial)
    not_chat        /v1/completions: a raw text prompt is not a chat conversation
    empty           a reply with neither text nor tool calls
    non_text        a message with image or audio parts (text parts are joined)
    session, model, date, finish_reason    the user's filters
    duplicate       the same (prompt, completion, tools) as a trace kept earlier
    rescore_error, below_min_reward        re-scoring with an environment's rubric

Error traces are always dropped (there is no `--include-errors`): an error trace has no
complete reply, so neither dataset could use it.

Two datasets come out of the kept traces:

* **sft** rows `{"prompt": messages, "completion": [assistant message]}` plus metadata
  columns `trace_id`, `session_id`, `model`, `tools` (JSON text), `finish_reason`,
  `started_at` (and `reward` when re-scored): what `lmgym sft --sft.data FILE.jsonl`
  reads (it reads JSONL only) and the conversational format of TRL's SFTTrainer.
* **env** rows `{"id": trace id, "prompt": messages, "answer": recorded text, "info":
  {...}}`: `load_traces_environment(path)` (the bundled environment `traces`, so
  `lmgym eval traces -a '{"path": "OUT"}'`) replays each prompt and compares the new
  reply with the recorded one.

Messages keep only `role`, `content`, `tool_calls`, `tool_call_id` and `name` (what
chat templates read); the `developer` role becomes `system`, which chat templates know.
JSONL rows are written as they are; HF (`save_to_disk`) and parquet hold messages as
Arrow structs, so a key a message lacks reads back as null: `clean_message` drops those.

Re-scoring (`rescore`) scores each kept trace as a one-turn rollout with an
environment's rubric. Real traffic has no reference answer, so only reward functions
that do without one can score it (format rewards, judges whose template does not name
`{answer}`, guards); a rubric that needs the answer is refused with the names of the
functions that do.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import orjson

from lmgym import errors
from lmgym.envs.single_turn import SingleTurnEnv
from lmgym.eval.export import claim
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Example, Message, Messages, Rollout, Turn

logger = logging.getLogger(__name__)

TRACE_FILE = re.compile(r"traces-(\d+)\.jsonl")
CHAT_ENDPOINT = "/v1/chat/completions"
# reasoning_content (vLLM's reasoning parser, reasoning APIs) is kept: it is the training
# data of reasoning models; templates that do not know it ignore it.
MESSAGE_KEYS = ("role", "content", "tool_calls", "tool_call_id", "name", "reasoning_content")
FORMATS = ("jsonl", "hf", "parquet")
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


class NonTextContent(ValueError):
    """A message holds image or audio parts, which a text dataset cannot keep."""


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
    """`value` when it is of `kind` (or null, unless required); else MalformedTrace naming `where`."""
    if (value is None and not required) or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
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


# ----------------------------------------------------------------------------- messages


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
    """The chat-template keys of a message, content as text (see the module docstring)."""
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
    response, status = trace.get("response"), trace.get("status")
    if trace.get("error") or not isinstance(response, dict) or (isinstance(status, int) and status >= 400):
        return "error"
    messages = trace["request"].get("messages")
    if trace.get("endpoint", CHAT_ENDPOINT) != CHAT_ENDPOINT or not isinstance(messages, list):
        return "not_chat"
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


# ----------------------------------------------------------------------------- re-scoring


def answer_functions(rubric: Any) -> list[str]:
    """Names of the rubric's reward functions that need the reference answer."""
    from lmgym.rubrics.judge import template_fields

    names = []
    for func, name in zip(rubric.funcs, rubric.names):
        template = getattr(func, "template", None)
        uses_template = isinstance(template, str) and "answer" in template_fields(template)
        if {"answer", "answers"} & set(inspect.signature(func).parameters) or uses_template:
            names.append(name)
    return names


def trace_rollout(selected: Selected) -> Rollout:
    """A trace as a scored-to-be one-turn rollout (no reference answer)."""
    trace = selected.trace
    example = Example(id=str(trace.get("id")), prompt=selected.prompt, answer=None, info={})
    finish = (trace.get("response") or {}).get("finish_reason")
    rollout = Rollout(example=example, turns=[Turn(assistant=selected.completion, finish_reason=finish)])
    rollout.state.update(turn=1, stop_reason="done")
    return rollout


def check_rescorable(env: Any) -> None:
    """A UsageError when `env`'s rubric cannot score traffic that has no reference answer."""
    from lmgym.envs.group import EnvGroup

    if isinstance(env, EnvGroup):
        raise errors.UsageError("re-score with one environment, not a group: traces belong to none of its members")
    needing = answer_functions(env.rubric)
    if needing:
        raise errors.UsageError(
            f"cannot re-score traces with this rubric: {', '.join(needing)} need the reference `answer`, which "
            "recorded traffic does not have. Re-score with reward functions that do without it (format rewards, "
            "judges whose template does not name {answer}, guards)."
        )


async def rescore(env: Any, selected: Sequence[Selected], *, concurrency: int = 16) -> list[Rollout]:
    """Score every selected trace with `env`'s rubric; sets `reward` on each `Selected`."""
    check_rescorable(env)
    rollouts = [trace_rollout(s) for s in selected]
    limit = asyncio.Semaphore(concurrency)

    async def score(rollout: Rollout) -> None:
        async with limit:
            await env.score_group([rollout])

    async with env.running():
        await asyncio.gather(*(score(r) for r in rollouts))
    for item, rollout in zip(selected, rollouts):
        item.reward = rollout.reward if rollout.error is None else None
    return rollouts


def keep_rewarded(selected: Sequence[Selected], rollouts: Sequence[Rollout], min_reward: float | None, counts: Counts) -> list[Selected]:
    """Drop the traces whose re-scoring failed or fell below `min_reward`."""
    kept = []
    for item, rollout in zip(selected, rollouts):
        if rollout.error is not None:
            logger.warning("trace %s: re-scoring failed: %s", item.trace.get("id"), rollout.error.message)
            counts.drop("rescore_error")
        elif min_reward is not None and rollout.reward < min_reward:
            counts.drop("below_min_reward")
        else:
            kept.append(item)
    counts.kept = len(kept)
    return kept


# ------------------------------------------------------------------------------ rows


def sft_row(item: Selected) -> dict[str, Any]:
    trace = item.trace
    row = {
        "prompt": item.prompt,
        "completion": [item.completion],
        "trace_id": trace.get("id"),
        "session_id": trace.get("session_id"),
        "model": (trace.get("response") or {}).get("model") or trace["request"].get("model"),
        "tools": tools_text(item.tools),
        "finish_reason": (trace.get("response") or {}).get("finish_reason"),
        "started_at": trace.get("started_at"),
    }
    if item.reward is not None:
        row["reward"] = item.reward
    return row


def env_row(item: Selected) -> dict[str, Any]:
    from lmgym.rubrics.judge import render_transcript

    sft = sft_row(item)
    calls = item.completion.get("tool_calls")
    info = {k: sft[k] for k in ("trace_id", "session_id", "model", "tools", "finish_reason")}
    info.update(tool_calls=tools_text(calls), reference=render_transcript([item.completion]), reward=item.reward,
                reasoning_content=item.completion.get("reasoning_content"))
    return {"id": sft["trace_id"], "prompt": item.prompt, "answer": item.completion.get("content") or "", "info": info}


# ------------------------------------------------------------------------------ writing


def output_format(out: Path, format: str | None = None) -> str:
    """The format asked for, else by suffix: .jsonl, .parquet, anything else a HF folder."""
    if format is not None:
        if format not in FORMATS:
            raise errors.UsageError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        return format
    return {".jsonl": "jsonl", ".parquet": "parquet"}.get(out.suffix.lower(), "hf")


def save_rows(rows: Sequence[Mapping[str, Any]], out: Path, format: str, *, overwrite: bool = False) -> Path:
    """Write rows as JSONL, a parquet file, or a `datasets` folder (`load_from_disk`)."""
    if not rows:
        raise errors.UsageError("no rows to write")
    claim(out, overwrite)
    if format == "jsonl":
        option = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
        out.write_bytes(b"".join(orjson.dumps(row, option=option, default=str) for row in rows))
        return out
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    try:
        dataset = Dataset.from_list([dict(row) for row in rows])
    except (TypeError, ValueError) as exc:  # pyarrow's ArrowTypeError and ArrowInvalid
        found = mixed_column(rows)
        raise errors.UsageError(
            f"cannot write {out} as {format}: {found or str(exc).splitlines()[0]}; Arrow needs one type per "
            "column: write a .jsonl file, which keeps each row as it is"
        ) from None
    if format == "parquet":
        dataset.to_parquet(str(out))
    else:
        dataset.save_to_disk(str(out))
    return out


def mixed_column(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """Which column and row Arrow cannot hold with the rows before it, or None if it finds none."""
    import pyarrow as pa

    def fits(values: list[Any]) -> bool:
        try:
            pa.array(values)
        except (TypeError, ValueError):
            return False
        return True

    columns = dict.fromkeys(key for row in rows for key in row)
    for column in columns:
        values = [row.get(column) for row in rows]
        if fits(values):
            continue
        good, bad = 0, len(values)  # values[:good] fit, values[:bad] do not
        while bad - good > 1:
            middle = (good + bad) // 2
            good, bad = (middle, bad) if fits(values[:middle]) else (good, middle)
        shown = orjson.dumps(values[bad - 1], default=str).decode()[:80]
        return f"column {column!r} of row {bad} is {shown}, of a different type than in the rows before it"
    return None


def load_rows(path: Path | str) -> list[dict[str, Any]]:
    """Rows written by `save_rows`, in any of its formats, messages cleaned of Arrow nulls."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise errors.DatasetError(f"{path}:{number}: not valid JSON ({exc})") from None
        return rows
    from datasets import Dataset, load_from_disk

    if path.is_file():
        rows = list(Dataset.from_parquet(str(path)))
    elif path.is_dir():
        rows = list(load_from_disk(str(path)))
    else:
        raise errors.DatasetError(f"no dataset at {path}: give a .jsonl or .parquet file, or a saved dataset folder")
    for row in rows:
        for column in ("prompt", "completion"):
            if isinstance(row.get(column), list):
                row[column] = [clean_message(m) for m in row[column]]
    return rows


# ----------------------------------------------------------------------- the environment

REFERENCE_TEMPLATE = """A model replied to a conversation. Compare its new reply with a reference reply recorded earlier.

Conversation:
{prompt}

Reference reply:
{reference}

New reply:
{completion}

Is the new reply at least as correct and useful as the reference? Reply with one line: "Verdict: yes" or "Verdict: no"."""


def normalise_space(text: str | None) -> str:
    return " ".join((text or "").split())


def calls_of(calls: Any) -> list[tuple[str, Any]]:
    """(name, parsed arguments) of tool calls, so argument formatting does not matter."""
    result = []
    for call in calls or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError:
            arguments = function.get("arguments")
        result.append((function.get("name"), arguments))
    return result


def matches_recorded(completion: Messages, answer: str, info: Mapping[str, Any]) -> float:
    """1.0 when the new reply equals the recorded one: the same tool calls (name and
    arguments) when it made calls, else the same text up to whitespace."""
    reply = next((m for m in reversed(completion) if m.get("role") == "assistant"), {})
    recorded_calls = json.loads(info["tool_calls"]) if info.get("tool_calls") else None
    if recorded_calls or reply.get("tool_calls"):
        return float(calls_of(recorded_calls) == calls_of(reply.get("tool_calls")))
    return float(normalise_space(text_of(reply.get("content"))) == normalise_space(answer))


def load_traces_environment(
    path: str,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key_var: str = "OPENAI_API_KEY",
    max_tokens: int | None = None,
):
    """The env dataset at `path` as a single-turn environment: each recorded prompt is
    replayed (with its own tools) and `matches_recorded` compares the reply with the
    recorded one. With `judge_model`, a Judge grades the reply against the recorded one
    and is the reward; exact match stays as a metric (weight 0)."""
    rows = load_rows(path)
    if not rows:
        raise errors.DatasetError(f"{path} holds no rows")
    for row in rows:
        if "answer" not in row or "info" not in row:
            raise errors.DatasetError(f"{path} is not an env dataset of `lmgym traces --to env` (rows need answer and info)")
    rubric = Rubric([matches_recorded])
    if judge_model is not None:
        from lmgym.rubrics.judge import Judge

        rubric = Rubric([matches_recorded], weights=[0.0])
        rubric.add(Judge(judge_model, template=REFERENCE_TEMPLATE, base_url=judge_base_url, api_key_var=judge_api_key_var))
    sampling = {"max_tokens": max_tokens} if max_tokens else {}
    return TracesEnv(eval_dataset=rows, rubric=rubric, sampling_args=sampling)


class TracesEnv(SingleTurnEnv):
    """One reply per recorded prompt, offered the tools its recorded request offered."""

    async def rollout(self, client, model, example, **kwargs):
        tools = example.info.get("tools")
        env = self
        if tools:
            env = copy.copy(self)  # the loop reads self.tools, and other rollouts run concurrently
            env.tools = json.loads(tools)
        return await SingleTurnEnv.rollout(env, client, model, example, **kwargs)

