"""Run directories as lmgym writes them, for the report's tests: six sample rollouts (a tool
call, a correct one, a wrong one carrying an injected script, an error, a cut-off one and
one at the turn limit) and a training run's metrics."""

from __future__ import annotations

import json
from pathlib import Path

from lmgym.eval.results import ResultsWriter, write_metadata
from lmgym.types import Example, Rollout, RolloutError, Turn, Usage

SYSTEM = {"role": "system", "content": "Use the calculator tool. Think in <think></think> first."}
XSS = "</script><script>alert(1)</script>"


def rollout(example_id: int, index: int, reply: str, reward: float | None, **kwargs) -> Rollout:
    example = Example(example_id, [SYSTEM, {"role": "user", "content": f"What is {example_id} + 2?"}], answer=str(example_id + 2))
    return Rollout(
        example, index, turns=kwargs.pop("turns", [Turn({"role": "assistant", "content": reply})]), reward=reward,
        usage=Usage(40, 12, 1), latency_s=0.5 + example_id, state={"turn": 1, "stop_reason": "done"}, **kwargs,
    )


def sample_records() -> list[dict]:
    """Six rollouts: a tool call and its result with <think> reasoning, a plain correct one,
    a zero-reward one, an errored one, one cut at the token limit, one at the turn limit."""
    call = {"id": "call_1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "0 + 2"}'}}
    tool_turns = [
        Turn({"role": "assistant", "content": "<think>I should use the calculator.</think>", "tool_calls": [call]},
             env_messages=[{"role": "tool", "tool_call_id": "call_1", "content": "calculator says 2"}], finish_reason="tool_calls"),
        Turn({"role": "assistant", "content": "<think>The tool said 2.</think>The answer is 2."}, finish_reason="stop"),
    ]
    with_tool = rollout(0, 0, "", 1.0, turns=tool_turns, metrics={"correct": 1.0, "format": 1.0})
    with_tool.state["turn"] = 2
    correct = rollout(1, 0, "3", 1.0, metrics={"correct": 1.0, "format": 0.0})
    wrong = rollout(2, 0, f"It is 5. {XSS}", 0.0, metrics={"correct": 0.0, "format": 0.0})
    failed = rollout(3, 0, "", None, error=RolloutError("server", "HTTP 503 after 5 retries"))
    cut = rollout(4, 0, "Let me count: 1, 2, 3, 4, 5, 6", 0.5, metrics={"correct": 0.0, "format": 1.0})
    looped = rollout(5, 0, "again", 0.25, metrics={"correct": 0.0, "format": 1.0})
    looped.state["stop_reason"] = "max_turns"
    records = [r.to_dict() for r in (with_tool, correct, wrong, failed, cut, looped)]
    records[4]["finish_reason"] = "length"  # records do not carry finish_reason yet; a run that adds it
    return records


def write_sample_run(run_dir: Path, records: list[dict] | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(run_dir / "results.jsonl")
    writer.write(sample_records() if records is None else records)
    writer.close()
    write_metadata(run_dir, {"config": {"env": "calc-env", "model": "scripted", "pass_threshold": 1.0}, "status": "completed"})
    return run_dir


def write_training_run(run_dir: Path, steps: int = 5) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [{"step": 0, "eval/reward": 0.1, "eval/errors": 0.0}]
    lines += [{"sft_step": s, "sft/loss": 2.0 / s} for s in range(1, 9)]  # more SFT steps than RL steps
    lines += [
        {"step": s, "reward": 0.1 * s, "loss": -0.01 * s, "kl": 1e-4 * s, "tokens_per_s": 100.0 + s, "lr": 1e-3, "grad_norm": None}
        for s in range(1, steps + 1)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "config.toml").write_text('[env]\nname = "reverse-digits"\n')
    return run_dir
