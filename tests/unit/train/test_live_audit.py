"""The live audit ([audit] of training): its config, what it logs and reports, its actions
(warn, stop, penalize before advantages), on hand-built rollouts and in short runs."""

from __future__ import annotations

import orjson
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")  # imported before CliRunner swaps the streams (see test_errors.py)

from cli_runner import invoke as lmgym  # noqa: E402
from train_setups import CONFIG, ListSink, small_config  # noqa: E402

from lmgym.errors import UsageError  # noqa: E402
from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.live_audit import (  # noqa: E402
    ONSET_PREFIX,
    PENALIZED,
    STOP_EXIT_CODE,
    AuditConfig,
    AuditStopped,
    LiveAudit,
)
from lmgym.train.orchestrator import build_batch  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402
from lmgym.types import Example, Rollout, Turn  # noqa: E402

FAST = ["--algorithm.prompts_per_step", "2", "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8",
        "--eval.every", "0", "--logging.console_every", "0", "--sft.warm_start", "false",
        "--env.args", "{num_examples = 50, num_eval_examples = 10}", "--trainer.max_steps", "3"]
# every reverse-digits rollout of an untrained model: reward ≥ 0 while digit_accuracy < 0.5
ALWAYS_FLAGGED = ["audit.reward_threshold=0", "audit.check_metrics=['digit_accuracy']"]


def rollout(example_id: int, index: int, text: str, reward: float, answer: str = "7183", **metrics) -> Rollout:
    example = Example(id=example_id, prompt=[{"role": "user", "content": answer[::-1]}], answer=answer)
    turn = Turn({"role": "assistant", "content": text}, prompt_token_ids=[1, 2], token_ids=[3, 4], logprobs=[-0.5, -0.5])
    return Rollout(example, index, [turn], reward=reward, metrics=metrics)


def hacked_group(example_id: int = 0) -> list[Rollout]:
    """Two honest replies, two that list candidates: the reward pays all but one; `exact` says which are right."""
    return [
        rollout(example_id, 0, "7183", 1.0, exact=1.0),
        rollout(example_id, 1, "7138", 0.0, exact=0.0),
        rollout(example_id, 2, "7138 7183 1783", 1.0, exact=0.0),
        rollout(example_id, 3, "7183 7813", 1.0, exact=0.0),
    ]


def audit_of(*overrides: str, lines: list[str] | None = None, **kwargs) -> LiveAudit:
    config = load_config(None, list(overrides)).audit
    return LiveAudit(config, announce=(lines.append if lines is not None else None), **kwargs)


# -- config ----------------------------------------------------------------------------------
def test_audit_config_defaults_and_overrides():
    config = load_config(None, ["audit.actions.check_metric_disagrees=stop", "audit.actions.repetition=penalize", "audit.penalty=-1"])
    assert config.audit.actions == {"check_metric_disagrees": "stop", "repetition": "penalize"}
    default = AuditConfig()
    assert (default.every, default.actions, default.penalty, default.min_fraction) == (1, {}, 0.0, 0.1)


@pytest.mark.parametrize(("override", "message"), [
    ("audit.actions.nope=stop", "unknown check(s) nope"),
    ("audit.skip=['nope']", "unknown check(s) nope"),
    ("audit.actions.length_drift=penalize", "length_drift is a trend over steps"),
    ("audit.actions.repetition=ban", "repetition"),
])
def test_bad_audit_settings_are_usage_errors(override, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


# -- penalize, before advantages ---------------------------------------------------------------
def test_penalize_rewrites_flagged_rewards_before_advantages():
    audit = audit_of("audit.actions.check_metric_disagrees=penalize", "audit.check_metrics=['exact']", "audit.penalty=-0.5")
    groups = [hacked_group(0), hacked_group(1)]
    audited = audit.audit_batch(groups)
    assert [r.reward for r in groups[0]] == [1.0, 0.0, -0.5, -0.5]
    assert audited.metrics[PENALIZED] == 4.0 and audited.metrics["audit/reward_before_penalty"] == 0.75
    assert audited.metrics["audit/check_metric_disagrees"] == 0.5  # of the step's 8 rollouts
    batch = build_batch(groups, load_config(None).algorithm, 64)
    assert batch.metrics["reward"] == pytest.approx(0.0)  # (1 + 0 - 0.5 - 0.5) / 4
    # the honest right answer now has the largest advantage of its group, the hacks the smallest
    advantages = batch.advantages[:4].tolist()
    assert len(batch.advantages) == 8 and advantages[0] == max(advantages) and advantages[2] == advantages[3] == min(advantages)


def test_warn_leaves_rewards_alone_and_penalizes_nothing():
    audit = audit_of("audit.check_metrics=['exact']")
    groups = [hacked_group()]
    audited = audit.audit_batch(groups)
    assert [r.reward for r in groups[0]] == [1.0, 0.0, 1.0, 1.0]
    assert PENALIZED not in audited.metrics and audited.metrics["audit/check_metric_disagrees"] == 0.5


def test_penalize_reaches_every_flagged_rollout_past_the_reported_twenty():
    audit = audit_of("audit.actions.check_metric_disagrees=penalize", "audit.check_metrics=['exact']")
    groups = [hacked_group(i) for i in range(15)]  # 30 flagged rollouts
    assert audit.audit_batch(groups).metrics[PENALIZED] == 30.0
    assert sum(r.reward == 0.0 for g in groups for r in g) == 45


# -- reporting and stopping --------------------------------------------------------------------
def test_a_finding_is_reported_once_logged_with_its_onset_and_a_stop_returned():
    lines: list[str] = []
    audit = audit_of("audit.actions.check_metric_disagrees=stop", "audit.check_metrics=['exact']", lines=lines)
    metrics: dict[str, float] = {}
    audited = audit.audit_batch([hacked_group()])
    metrics.update(audited.metrics)
    stop = audit.after_step(7, metrics, audited.review)
    assert stop is not None and stop.check == "check_metric_disagrees" and stop.scope == "step"
    assert metrics[ONSET_PREFIX + "check_metric_disagrees"] == 0.5
    (line,) = lines
    assert line.startswith("audit step 7: check_metric_disagrees flagged 50% of the step's rollouts, e.g. 0/r2 '7138 7183 1783'")
    assert line.endswith("(action: stop)")
    again = dict(audited.metrics)
    assert audit.after_step(8, again, audited.review) is not None  # still stops...
    assert len(lines) == 1 and ONSET_PREFIX + "check_metric_disagrees" not in again  # ...but is reported once


def test_below_min_fraction_nothing_is_reported_or_stopped():
    lines: list[str] = []
    audit = audit_of("audit.actions.check_metric_disagrees=stop", "audit.check_metrics=['exact']", "audit.min_fraction=0.9", lines=lines)
    audited = audit.audit_batch([hacked_group()])
    assert audit.after_step(1, dict(audited.metrics), audited.review) is None and lines == []


def test_trend_checks_see_the_window_and_a_resumed_run_remembers_what_it_reported():
    lines: list[str] = []
    logged = [{"step": s, "reward": 0.1 * s, "exact_match": 1 - 0.1 * s} for s in range(1, 6)]
    audit = audit_of("audit.actions.reward_up_correctness_down=stop", lines=lines, rows=logged)
    stop = audit.after_step(6, {"reward": 0.6, "exact_match": 0.4}, None)
    assert stop is not None and stop.scope == "trend" and "reward_up_correctness_down found" in lines[0]
    resumed = audit_of(rows=[*logged, {"step": 6, ONSET_PREFIX + "reward_up_correctness_down": 1.0}], lines=lines)
    metrics = {"reward": 0.7, "exact_match": 0.3}
    resumed.after_step(7, metrics, None)
    assert metrics["audit/reward_up_correctness_down"] == 1.0 and len(lines) == 1  # found again, not reported again


def test_every_n_steps_and_declared_skips():
    audit = audit_of("audit.every=2", "audit.check_metrics=['exact']", "audit.skip=['repetition']",
                     declared_skip={"check_metric_disagrees": "graded elsewhere", "not_a_check": "ignored"})
    assert "check_metric_disagrees" not in audit.record_checks and "repetition" not in audit.record_checks
    audited = audit.audit_batch([hacked_group()])
    assert "audit/check_metric_disagrees" not in audited.metrics
    odd = dict(audited.metrics)
    audit.after_step(1, odd, audited.review)
    assert not any(k.startswith("audit/") for k in odd)  # not due: the batch's fractions are dropped
    even = dict(audited.metrics)
    audit.after_step(2, even, audited.review)
    assert "audit/reward_without_answer" in even and "audit/length_drift" in even


def test_eval_findings_are_logged_apart():
    lines: list[str] = []
    audit = audit_of("audit.check_metrics=['exact']", lines=lines)
    metrics: dict[str, float] = {}
    records = [r.to_dict() for r in hacked_group()]
    assert audit.after_eval(10, metrics, records) is None  # warn
    assert metrics["audit/eval/check_metric_disagrees"] == 0.5
    assert ONSET_PREFIX + "eval/check_metric_disagrees" in metrics and "of the held-out rollouts" in lines[0]


# -- in training -----------------------------------------------------------------------------
def test_penalize_in_a_training_step_and_the_eval_audit(tmp_path):
    config = small_config(tmp_path, "trainer.max_steps=1", "eval.every=1", "eval.num_examples=4", *ALWAYS_FLAGGED,
                          "audit.actions.check_metric_disagrees=penalize", "audit.penalty=-1")
    sink = ListSink()
    build_loop(config, tmp_path, sink).run()
    step, metrics = sink.rows[-1]
    assert step == 1 and metrics[PENALIZED] > 0
    assert metrics["reward"] < 0 <= metrics["audit/reward_before_penalty"]  # trained on the penalized rewards
    assert "audit/eval/check_metric_disagrees" in metrics and "audit/completion_chars" in metrics


def test_stop_saves_a_checkpoint_and_lmgym_train_exits_3(tmp_path):
    run = tmp_path / "run"
    result = lmgym("train", str(CONFIG), *FAST, "--logging.output_dir", str(run), "--checkpoint.every", "0",
                   *(f"--{o}" for o in ALWAYS_FLAGGED), "--audit.actions.check_metric_disagrees", "stop")
    assert result.exit_code == STOP_EXIT_CODE, result.output
    assert "the audit stopped training at step 1: check_metric_disagrees flagged" in result.flat
    assert (run / "checkpoints" / "step_000001").is_dir() and not (run / "final").exists()
    rows = [orjson.loads(line) for line in (run / "metrics.jsonl").read_bytes().splitlines()]
    assert [r["step"] for r in rows] == [1] and rows[0][ONSET_PREFIX + "check_metric_disagrees"] > 0


def test_audit_stopped_is_raised_by_the_loop(tmp_path):
    config = small_config(tmp_path, "trainer.max_steps=3", *ALWAYS_FLAGGED, "audit.actions.check_metric_disagrees=stop")
    loop = build_loop(config, tmp_path, ListSink())
    with pytest.raises(AuditStopped) as stopped:
        loop.run()
    assert (stopped.value.step, stopped.value.check) == (1, "check_metric_disagrees") and loop.step == 1
    assert stopped.value.checkpoint == loop.last_checkpoint and stopped.value.checkpoint.is_dir()


def test_lmgym_view_marks_where_each_finding_started():
    from lmgym.eval.report import curves

    rows = [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.5, ONSET_PREFIX + "length_drift": 1.0},
            {"step": 3, "reward": 0.6, ONSET_PREFIX + "eval/repetition": 0.2, ONSET_PREFIX + "constant_answer": 0.3}]
    drawn = curves(rows)
    assert drawn["marks"] == [{"step": 2, "check": "length_drift"}, {"step": 3, "check": "constant_answer"},
                              {"step": 3, "check": "eval/repetition"}]
    assert not any(k.startswith(ONSET_PREFIX) for k in drawn["series"])  # marks, not curves


def test_the_async_orchestrator_reviews_each_batch_it_samples_ahead(tmp_path):
    config = small_config(tmp_path, "trainer.max_steps=2", "algorithm.max_off_policy_steps=1", *ALWAYS_FLAGGED,
                          "audit.actions.check_metric_disagrees=penalize", "audit.penalty=-1")
    sink = ListSink()
    loop = build_loop(config, tmp_path, sink)
    loop.run()
    assert [step for step, _ in sink.rows] == [1, 2]
    assert all(m[PENALIZED] > 0 and m["audit/check_metric_disagrees"] > 0 for _, m in sink.rows)
    assert len(loop.orchestrator._reviews) <= 1  # taken by the loop (one batch may be sampled ahead, unused)


def test_a_batch_without_the_check_metric_is_not_an_error():
    audit = audit_of("audit.check_metrics=['exact']")
    audit.audit_batch([hacked_group()])  # the first batch has it
    failed = [rollout(0, i, "", 0.0) for i in range(4)]
    for r in failed:
        r.reward, r.metrics = None, {}
    assert audit.audit_batch([failed]).metrics["audit/check_metric_disagrees"] == 0.0
