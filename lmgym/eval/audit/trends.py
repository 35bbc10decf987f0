"""The audit's checks over a training run's metrics.jsonl: trends across steps that
suggest the policy fits the reward, not the task."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lmgym.eval.audit.findings import Finding, _mean
from lmgym.eval.results import is_finite_number


# -- checks over training metrics -------------------------------------------------------------
def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys against xs (0.0 when xs do not vary)."""
    mx, my = _mean(xs), _mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def reward_up_eval_down(
    rows: Sequence[dict[str, Any]],
    *,
    train_metric: str = "reward",
    eval_metric: str = "eval/reward",
    last_steps: int = 100,
    min_points: int = 3,
    min_change: float = 0.02,
) -> list[Finding]:
    """Training reward rising while the held-out reward falls (rows of metrics.jsonl).

    Over the last `last_steps` steps, fit least-squares lines to `train_metric` and
    `eval_metric` against the step. Found when, across the window's span of steps, the
    fitted train line rises by ≥ `min_change` and the eval line falls by ≥ `min_change`,
    with at least `min_points` points of each.
    """
    stepped = [row for row in rows if is_finite_number(row.get("step"))]
    if not stepped:
        return []
    last = max(row["step"] for row in stepped)
    window = [row for row in stepped if row["step"] > last - last_steps]
    train = [(row["step"], row[train_metric]) for row in window if is_finite_number(row.get(train_metric))]
    held = [(row["step"], row[eval_metric]) for row in window if is_finite_number(row.get(eval_metric))]
    if len(train) < min_points or len(held) < min_points:
        return []
    lo, hi = min(s for s, _ in train + held), max(s for s, _ in train + held)
    train_slope, eval_slope = slope(*zip(*train)), slope(*zip(*held))
    rise, fall = train_slope * (hi - lo), eval_slope * (hi - lo)
    if rise < min_change or fall > -min_change:
        return []
    return [Finding(
        "reward_up_eval_down", "high", len(held), None, (f"steps {lo}–{hi}",),
        f"over steps {lo}–{hi} {train_metric} rose {rise:+.3f} while {eval_metric} fell {fall:+.3f} "
        "(least-squares fits): the policy may be fitting the reward, not the task",
        {"train_slope": train_slope, "eval_slope": eval_slope, "first_step": lo, "last_step": hi},
    )]


METRICS_CHECKS: tuple[Callable[..., list[Finding]], ...] = (reward_up_eval_down,)
