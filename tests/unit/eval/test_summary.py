"""Summary statistics: unbiased pass@k by hand, percentiles, errors kept apart."""

from __future__ import annotations

import math

import pytest

from lmgym.eval.summary import Summary, ks_for, pass_at_k, percentile


def test_pass_at_k_hand_values():
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 3) == pytest.approx(1 - 1 / 10)  # C(3,3)/C(5,3)
    assert pass_at_k(3, 2, 2) == 1.0  # n - c < k
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.95) == pytest.approx(3.85)
    assert math.isnan(percentile([], 0.5))


def record(example_id, reward, error=None, latency=1.0, metrics=None):
    return {
        "example_id": example_id, "rollout": 0, "reward": reward, "latency_s": latency,
        "metrics": metrics or {}, "error": {"kind": error, "message": ""} if error else None,
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "requests": 1},
    }


def test_summary_means_pass_at_k_errors_tokens_and_cost():
    s = Summary(pass_threshold=1.0, price_input_per_mtok=2.0, price_output_per_mtok=8.0)
    for r in [record(0, 1.0, metrics={"m": 1.0}), record(0, 0.0, metrics={"m": 0.0}),
              record(1, 1.0, metrics={"m": 1.0}), record(1, 1.0, metrics={"m": 0.5}),
              record(1, None, error="timeout", latency=9.0)]:
        s.add(r)
    d = s.to_dict()
    assert d["rollouts"] == 5 and d["scored"] == 4 and d["errors"] == {"timeout": 1}
    assert d["reward_mean"] == 0.75 and d["reward_std"] == pytest.approx(math.sqrt(0.1875))
    assert d["metrics"] == {"m": 0.625}
    # example 0: n=2, c=1; example 1: n=2 (the errored rollout is left out), c=2
    assert d["pass_at_k"] == {"1": pytest.approx((0.5 + 1.0) / 2), "2": pytest.approx((1.0 + 1.0) / 2)}
    assert d["prompt_tokens"] == 50 and d["completion_tokens"] == 25
    assert d["cost_usd"] == pytest.approx((50 * 2 + 25 * 8) / 1e6)
    assert d["latency_p50_s"] == 1.0 and d["latency_p95_s"] == pytest.approx(7.4)


def test_empty_summary_is_json_safe():
    d = Summary().to_dict()
    assert d["reward_mean"] is None and d["pass_at_k"] == {} and d["cost_usd"] is None


def test_pass_at_k_for_every_k_a_user_expects():
    assert ks_for(1) == [1] and ks_for(3) == [1, 2, 3] and ks_for(4) == [1, 2, 4] and ks_for(10) == [1, 2, 4, 8, 10]
    s = Summary()
    for _ in range(3):
        s.add(record(0, 1.0))
    assert list(s.to_dict()["pass_at_k"]) == ["1", "2", "3"]


def test_a_declared_pass_metric_decides_what_passes():
    """python-tests: 9 of 10 tests plus the format bonus is a reward of 1.0, but not a pass."""
    partial = record(0, 1.0, metrics={"tests_passed_all": 0.0, "tests_passed": 0.9})
    full = record(1, 1.1, metrics={"tests_passed_all": 1.0, "tests_passed": 1.0})
    by_reward, by_tests = Summary(), Summary(pass_metric="tests_passed_all")
    for s in (by_reward, by_tests):
        s.add(partial)
        s.add(full)
    assert by_reward.to_dict()["pass_at_k"]["1"] == 1.0
    assert by_tests.to_dict()["pass_at_k"]["1"] == 0.5
    assert by_tests.to_dict()["pass_metric"] == "tests_passed_all"
    lacking = Summary(pass_metric="not_a_metric")
    lacking.add(full)
    assert lacking.to_dict()["pass_at_k"]["1"] == 0.0  # a missing metric never passes


def test_first_error_of_each_kind_is_kept_shortened():
    s = Summary()
    s.add({**record(0, None, error="timeout"), "error": {"kind": "timeout", "message": "first\n  " + "x" * 300}})
    s.add({**record(1, None, error="timeout"), "error": {"kind": "timeout", "message": "second"}})
    first = s.to_dict()["first_errors"]["timeout"]
    assert first.startswith("first x") and len(first) == 200 and "second" not in first


def test_records_of_odd_types_are_counted_not_summed():
    """A hand-made or foreign results file: a text metric, a null or text reward, odd usage."""
    s = Summary()
    s.add(record(0, 1.0, metrics={"m": 1.0, "note": "fine", "flag": True}))
    s.add(record(1, None))
    s.add({**record(2, "high"), "usage": {"prompt_tokens": "10"}, "latency_s": "slow"})
    d = s.to_dict()
    assert d["rollouts"] == 3 and d["scored"] == 1 and d["metrics"] == {"m": 1.0}
    assert d["pass_at_k"] == {"1": 1.0} and d["prompt_tokens"] == 20
