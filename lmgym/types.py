"""The data lmgym passes around: examples in, rollouts out.

`Message` and `ToolCall` are TypedDicts in the OpenAI chat wire format rather than
dataclasses (a departure from DESIGN.md): they go to the API and into `results.jsonl`
as they are, so the hot path never converts them. Everything lmgym owns and computes
(`Example`, `Turn`, `Usage`, `Rollout`) is a dataclass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict


class FunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text, exactly as the model produced it


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall


class Message(TypedDict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    tool_calls: NotRequired[list[ToolCall]]
    tool_call_id: NotRequired[str]
    name: NotRequired[str]


Messages = list[Message]


@dataclass(frozen=True)
class Example:
    """One dataset row, normalised: the prompt is always a list of chat messages."""

    id: int | str
    prompt: Messages
    answer: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    task: str = "default"


@dataclass
class Usage:
    """Token counts summed over requests; `requests` counts HTTP attempts that returned."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests

    def to_dict(self) -> UsageRecord:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
        }


@dataclass
class ModelResponse:
    """What a `ModelClient` returns for one chat request."""

    message: Message
    finish_reason: str | None
    usage: Usage
    latency_s: float
    token_ids: list[int] | None = None  # the completion as sampled (local engines only)
    logprobs: list[float] | None = None  # the sampler's logprob of each completion token
    prompt_token_ids: list[int] | None = None  # the exact prompt the completion followed


@dataclass
class Turn:
    """One model reply and the environment's answer to it (tool results, feedback)."""

    assistant: Message
    env_messages: Messages = field(default_factory=list)
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    prompt_token_ids: list[int] | None = None


@dataclass
class RolloutError:
    """Why a rollout failed. `kind` is a short stable label used to count errors."""

    kind: str
    message: str

    def to_dict(self) -> ErrorRecord:
        return {"kind": self.kind, "message": self.message}


class UsageRecord(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    requests: int


class ErrorRecord(TypedDict):
    kind: str
    message: str


class RolloutRecord(TypedDict, total=False):
    """One line of results.jsonl, as `Rollout.to_dict` writes it. Everything that reads
    results (summary, report, audit, export, distill, traces) reads this shape; a file
    written by hand or by another tool may lack keys or hold odd types, so readers use
    `.get` and check types."""

    example_id: Any
    rollout: int
    task: str
    prompt: Messages
    completion: Messages
    answer: Any
    info: dict[str, Any]
    reward: float | None
    metrics: dict[str, float]
    error: ErrorRecord | None
    num_turns: int
    stop_reason: str | None
    finish_reason: str | None
    usage: UsageRecord
    started_at: float
    latency_s: float
    state: dict[str, Any]
    step: int  # training samples (samples.jsonl) only


@dataclass
class Rollout:
    """One episode of one example. A failed rollout keeps its error and has no reward."""

    example: Example
    index: int = 0
    turns: list[Turn] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    reward: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: RolloutError | None = None
    usage: Usage = field(default_factory=Usage)
    started_at: float = field(default_factory=time.time)
    latency_s: float = 0.0

    @property
    def completion(self) -> Messages:
        """Every message after the prompt: assistant replies and environment answers."""
        messages: Messages = []
        for turn in self.turns:
            messages.append(turn.assistant)
            messages.extend(turn.env_messages)
        return messages

    @property
    def messages(self) -> Messages:
        return [*self.example.prompt, *self.completion]

    def to_dict(self) -> RolloutRecord:
        """The JSON-safe record written to results.jsonl (one line per rollout)."""
        return {
            "example_id": self.example.id,
            "rollout": self.index,
            "task": self.example.task,
            "prompt": self.example.prompt,
            "completion": self.completion,
            "answer": self.example.answer,
            "info": self.example.info,
            "reward": self.reward,
            "metrics": self.metrics,
            "error": self.error.to_dict() if self.error else None,
            "num_turns": len(self.turns),
            "stop_reason": self.state.get("stop_reason"),
            "finish_reason": self.turns[-1].finish_reason if self.turns else None,
            "usage": self.usage.to_dict(),
            "started_at": self.started_at,
            "latency_s": self.latency_s,
            "state": self.state,
        }
