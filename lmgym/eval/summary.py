"""What a run amounts to: reward, metrics, pass@k, errors, tokens, cost and latency.

The summary is accumulated from rollout *records* (the dicts of results.jsonl), so a
resumed run summarises old and new rollouts alike, and nothing but a few numbers per
rollout is held in memory.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from lmgym.eval.results import is_finite_number
from lmgym.types import RolloutRecord


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c passed (Chen et al. 2021,
    arXiv 2107.03374): 1 - C(n-c, k) / C(n, k)."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 1]) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def ks_for(n: int) -> list[int]:
    """The k of pass@k worth reporting with n rollouts per example: 1, 2, 4, ... and n itself."""
    return sorted({2**i for i in range(n.bit_length()) if 2**i <= n} | ({n} if n > 0 else set()))


def rollout_passes(record: dict[str, Any], metric: str, threshold: float) -> bool:
    """Whether a scored rollout passes: its reward, or the environment's named metric (a
    missing or non-numeric metric fails), is at least the threshold."""
    value = record.get("reward") if metric == "reward" else (record.get("metrics") or {}).get(metric)
    return is_finite_number(value) and value >= threshold


@dataclass
class Summary:
    """Accumulates rollout records. A rollout *passes* when its reward (or the metric named
    by `pass_metric`, e.g. python-tests' `tests_passed_all`) ≥ pass_threshold;
    errored rollouts count as errors, not as failures of the model, and are left out of
    the reward mean and of pass@k. When the records come from more than one task (an
    EnvGroup), each task also gets a summary of its own."""

    pass_threshold: float = 1.0
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None
    rollouts: int = 0
    rewards: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)  # kind -> the first message seen
    metric_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    metric_counts: Counter = field(default_factory=Counter)
    passes: dict[Any, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    split_by_task: bool = True
    pass_metric: str = "reward"
    tasks: dict[str, Summary] = field(default_factory=dict)
    reward_sum: float = 0.0  # of `rewards`, kept as they come: the progress bar reads the mean after every rollout

    def add(self, record: RolloutRecord) -> None:
        if self.split_by_task:
            task = str(record.get("task") or "default")
            if task not in self.tasks:
                self.tasks[task] = Summary(self.pass_threshold, self.price_input_per_mtok, self.price_output_per_mtok,
                                           split_by_task=False, pass_metric=self.pass_metric)
            self.tasks[task].add(record)
        self.rollouts += 1
        usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
        self.prompt_tokens += _count(usage.get("prompt_tokens"))
        self.completion_tokens += _count(usage.get("completion_tokens"))
        self.requests += _count(usage.get("requests"))
        if is_finite_number(record.get("latency_s")):
            self.latencies.append(record["latency_s"])
        if record.get("error"):
            error = record["error"] if isinstance(record["error"], dict) else {"kind": "error", "message": record["error"]}
            kind = str(error.get("kind", "error"))
            self.errors[kind] += 1
            self.first_errors.setdefault(kind, _shorten(str(error.get("message", ""))))
            return
        reward = record.get("reward")
        if not is_finite_number(reward):  # a hand-made or foreign file: counted, never scored
            return
        self.rewards.append(reward)
        self.reward_sum += reward
        metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
        for name, value in metrics.items():
            if is_finite_number(value):  # a metric that is text is shown by the report, not averaged
                self.metric_sums[name] += value
                self.metric_counts[name] += 1
        tally = self.passes[_hashable(record["example_id"])]
        tally[0] += 1
        tally[1] += rollout_passes(record, self.pass_metric, self.pass_threshold)

    @property
    def mean_reward(self) -> float:
        """The mean reward so far, in constant time (a progress bar asks after every rollout)."""
        return self.reward_sum / len(self.rewards) if self.rewards else float("nan")

    def pass_at(self) -> dict[str, float]:
        """pass@k for k = 1, 2, 4, ... and the fewest scored rollouts of any example."""
        if not self.passes:
            return {}
        fewest = min(n for n, _ in self.passes.values())
        return {
            str(k): sum(pass_at_k(n, c, k) for n, c in self.passes.values()) / len(self.passes)
            for k in ks_for(fewest)
        }

    def cost_usd(self) -> float | None:
        if self.price_input_per_mtok is None and self.price_output_per_mtok is None:
            return None
        return (
            self.prompt_tokens * (self.price_input_per_mtok or 0.0)
            + self.completion_tokens * (self.price_output_per_mtok or 0.0)
        ) / 1e6

    def to_dict(self) -> dict[str, Any]:
        n = len(self.rewards)
        mean = sum(self.rewards) / n if n else float("nan")
        std = math.sqrt(sum((r - mean) ** 2 for r in self.rewards) / n) if n else float("nan")
        latencies = sorted(self.latencies)
        return {
            "rollouts": self.rollouts,
            "scored": n,
            "errors": dict(self.errors),
            "first_errors": dict(sorted(self.first_errors.items())),
            "reward_mean": _finite(mean),
            "reward_std": _finite(std),
            "metrics": {k: self.metric_sums[k] / self.metric_counts[k] for k in sorted(self.metric_sums)},
            "pass_metric": self.pass_metric,
            "pass_threshold": self.pass_threshold,
            "pass_at_k": self.pass_at(),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "requests": self.requests,
            "cost_usd": self.cost_usd(),
            "latency_p50_s": _finite(percentile(latencies, 0.5)),
            "latency_p95_s": _finite(percentile(latencies, 0.95)),
            **({"tasks": {name: task.to_dict() for name, task in sorted(self.tasks.items())}} if len(self.tasks) > 1 else {}),
        }


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (int, str, float)) else str(value)
