"""Replay recorded traffic (`lmgym traces --to env`) and compare each reply with the recorded one.

    lmgym traces TRACES_DIR --to env -o replay.jsonl
    lmgym eval traces -a '{"path": "replay.jsonl"}' -m MODEL -b URL -n -1 -r 1

The reward is 1.0 when the new reply matches the recorded one (the same tool calls, or
the same text up to whitespace). With `judge_model` (and `judge_base_url`,
`judge_api_key_var`), an LLM judge decides whether the new reply is at least as good as
the recorded one instead; exact match stays as a metric. See lmgym.flywheel.traces.
"""

from __future__ import annotations

from lmgym.flywheel import load_traces_environment


def load_environment(
    path: str,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key_var: str = "OPENAI_API_KEY",
    max_tokens: int | None = None,
):
    return load_traces_environment(path, judge_model, judge_base_url, judge_api_key_var, max_tokens)
