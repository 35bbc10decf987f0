"""The audit's training-only checks (lmgym.eval.audit.training) on hand-built records and
metrics rows: each finds its planted pattern, and the honest look-alike is left alone."""

from __future__ import annotations

import pytest

from lmgym.eval.audit import (
    CHECKS,
    TRAINING_CHECKS,
    constant_answer_rewarded,
    copied_from_hidden,
    every_reference,
    format_up_correctness_flat,
    identical_group_completions,
    length_drift,
    reward_up_correctness_down,
    reward_without_answer,
)


def record(example_id=0, rollout=0, text="7183", answer="7183", reward=1.0, prompt="3817", state=None, completion=None, **metrics) -> dict:
    return {
        "example_id": example_id, "rollout": rollout, "prompt": [{"role": "user", "content": prompt}],
        "completion": completion or [{"role": "assistant", "content": text}], "answer": answer, "reward": reward,
        "metrics": metrics, "error": None, "state": state or {},
    }


def rows(n: int = 10, **series) -> list[dict]:
    """Metric rows for steps 1..n; each keyword is a function of the step."""
    return [{"step": s, **{k: f(s) for k, f in series.items()}} for s in range(1, n + 1)]


def test_training_checks_are_not_lmgym_audits_and_have_distinct_names():
    assert set(TRAINING_CHECKS).isdisjoint(CHECKS)
    assert len(TRAINING_CHECKS) == 5 and all(TRAINING_CHECKS.values())


# -- reward up, correctness down -----------------------------------------------------------
def test_reward_rising_while_exact_match_falls_is_found():
    hacked = rows(10, reward=lambda s: 0.3 + 0.05 * s, exact_match=lambda s: 0.5 - 0.04 * s, digit_accuracy=lambda s: 0.5)
    (finding,) = reward_up_correctness_down(hacked)
    assert finding.check == "reward_up_correctness_down" and finding.severity == "high"
    assert finding.details["metric"] == "exact_match" and finding.details["train_slope"] > 0 > finding.details["eval_slope"]


def test_reward_and_correctness_rising_together_is_honest():
    assert reward_up_correctness_down(rows(10, reward=lambda s: 0.1 * s, exact_match=lambda s: 0.08 * s)) == []
    # a falling reward with a falling metric is not a hack either
    assert reward_up_correctness_down(rows(10, reward=lambda s: 1 - 0.05 * s, exact_match=lambda s: 1 - 0.05 * s)) == []


def test_correctness_metric_can_be_named_and_the_window_limits_the_fit():
    named = rows(10, reward=lambda s: 0.05 * s, passes=lambda s: 1 - 0.05 * s)
    assert reward_up_correctness_down(named) == []  # "passes" is not a correctness name
    (finding,) = reward_up_correctness_down(named, check_metrics=["passes"])
    assert finding.details["metric"] == "passes"
    # the hack is in steps 1-10; steps 11-30 are flat, so a window of 20 sees no trend
    late = named + rows(30, reward=lambda s: 0.5, passes=lambda s: 0.5)[10:]
    assert reward_up_correctness_down(late, check_metrics=["passes"], window=20) == []
    assert reward_up_correctness_down(late, check_metrics=["passes"], window=30) != []


# -- length drift ---------------------------------------------------------------------------
def test_growing_replies_are_a_medium_drift_and_shrinking_ones_low():
    (grew,) = length_drift(rows(10, **{"audit/completion_chars": lambda s: 5 + 3 * s}))
    assert grew.severity == "medium" and grew.details["ratio"] > 1.5
    (shrank,) = length_drift(rows(10, **{"audit/completion_chars": lambda s: 60 - 5 * s}))
    assert shrank.severity == "low" and shrank.details["ratio"] < 1 / 1.5


def test_steady_or_slightly_drifting_lengths_are_not_flagged():
    assert length_drift(rows(10, **{"audit/completion_chars": lambda s: 40 + (s % 2)})) == []
    assert length_drift(rows(10, **{"audit/completion_chars": lambda s: 2 + 0.4 * s})) == []  # ×3, but only +4 chars
    assert length_drift(rows(4, **{"audit/completion_chars": lambda s: 5 + 10 * s})) == []  # too few points


# -- format up, correctness flat --------------------------------------------------------------
def test_format_rising_while_correctness_stays_flat_is_found():
    (finding,) = format_up_correctness_flat(rows(10, format_reward=lambda s: 0.1 * s, correct=lambda s: 0.2))
    assert finding.details["metric"] == "format_reward" and finding.severity == "medium"


def test_format_rising_with_correctness_is_honest_and_either_alone_is_not_judged():
    assert format_up_correctness_flat(rows(10, format_reward=lambda s: 0.1 * s, correct=lambda s: 0.05 * s)) == []
    assert format_up_correctness_flat(rows(10, format_reward=lambda s: 0.1 * s)) == []  # no correctness metric
    assert format_up_correctness_flat(rows(10, format_reward=lambda s: 0.5, correct=lambda s: 0.2)) == []  # flat format


# -- copied from hidden state or a private tool -------------------------------------------------
def test_a_reply_holding_a_private_state_value_is_flagged():
    leak = record(text="the key is k3y-9f2a so 7183", state={"grader_key": "k3y-9f2a", "turn": 2})
    honest = record(rollout=1, text="7183", state={"grader_key": "k3y-9f2a"})
    (finding,) = copied_from_hidden([leak, honest], private_state=["grader_key"])
    assert (finding.count, finding.total, finding.examples) == (1, 2, ("0/r0",))
    assert copied_from_hidden([leak, honest]) == []  # the environment named no private field
    assert copied_from_hidden([leak], private_state=["turn"]) == []  # "2" is shorter than min_chars
    shown = record(text="k3y-9f2a", prompt="your key: k3y-9f2a", state={"grader_key": "k3y-9f2a"})
    assert copied_from_hidden([shown], private_state=["grader_key"]) == []  # it was in the prompt


def test_an_answer_taken_from_a_private_tools_result_is_flagged():
    def via(tool: str) -> dict:
        return record(completion=[
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "function": {"name": tool, "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "expected: 7183"},
            {"role": "assistant", "content": "<answer>7183</answer>"},
        ])

    (finding,) = copied_from_hidden([via("read_grader")], private_tools=["read_grader"])
    assert finding.count == 1
    assert copied_from_hidden([via("calculator")], private_tools=["read_grader"]) == []  # a tool meant to help
    unpaid = {**via("read_grader"), "reward": 0.0}
    assert copied_from_hidden([unpaid], private_tools=["read_grader"]) == []


# -- a constant answer that maximizes the reward ---------------------------------------------------
def test_a_constant_answer_paid_best_is_flagged():
    constant = [record(example_id=i, text="<answer>0</answer>", answer=str(i), reward=1.0) for i in range(4)]
    others = [record(example_id=i, rollout=1, text=f"<answer>{i}</answer>", answer=str(i), reward=0.5) for i in range(1, 4)]
    (finding,) = constant_answer_rewarded(constant + others)
    # example 0's "0" is right, so the three wrong ones are flagged
    assert (finding.count, finding.total, finding.severity, finding.examples) == (3, 7, "high", ("1/r0", "2/r0", "3/r0"))
    assert "'0'" in finding.explanation


def test_a_constant_answer_that_is_not_paid_or_is_rare_is_left_alone():
    constant = [record(example_id=i, text="<answer>0</answer>", answer=str(i), reward=0.0) for i in range(4)]
    right = [record(example_id=i, rollout=1, text=f"<answer>{i}</answer>", answer=str(i), reward=1.0) for i in range(4)]
    assert constant_answer_rewarded(constant + right) == []  # the reward does not pay it
    rare = [record(example_id=i, text="<answer>0</answer>", answer=str(i), reward=1.0) for i in range(3)]
    many = [record(example_id=i, rollout=r, text=f"<answer>{i}</answer>", answer=str(i)) for i in range(3) for r in range(1, 12)]
    assert constant_answer_rewarded(rare + many) == []  # wrong in 2 of 36 rollouts: under min_share
    same = [record(example_id=i, text="<answer>7</answer>", answer="7") for i in range(4)]
    assert constant_answer_rewarded(same) == []  # every example's answer is 7: not a constant answer


# -- every reference, for penalizing -------------------------------------------------------------
def test_every_reference_keeps_all_flagged_rollouts_inside_only():
    wrong = [record(example_id=i, text="nope") for i in range(30)]
    (capped,) = reward_without_answer(wrong)
    assert len(capped.examples) == 20 and capped.count == 30
    with every_reference():
        (full,) = reward_without_answer(wrong)
        (groups,) = identical_group_completions([record(example_id=i, rollout=r, text="x" * 50) for i in range(25) for r in range(2)])
    assert len(full.examples) == 30 and len(groups.examples) == 25
    (again,) = reward_without_answer(wrong)
    assert len(again.examples) == 20


@pytest.mark.parametrize("check", [reward_up_correctness_down, length_drift, format_up_correctness_flat])
def test_trend_checks_need_steps(check):
    assert check([]) == [] and check([{"reward": 1.0}]) == []
