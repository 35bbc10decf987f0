"""The replay environment: each recorded prompt asked again, the new reply compared with
the recorded one (the bundled environment `traces`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from lmgym import errors
from lmgym.envs.single_turn import SingleTurnEnv
from lmgym.flywheel.traces.dataset_io import load_rows
from lmgym.flywheel.traces.messages import text_of
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Messages

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

    def tools_for(self, example):
        """The tools the recorded request offered, for this rollout only."""
        tools = example.info.get("tools")
        return json.loads(tools) if tools else self.tools
