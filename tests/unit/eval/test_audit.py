"""Reward-hacking audit: each planted kind of gaming is found by its check and no other,
the honest run yields nothing, and `lmgym audit` / `lmgym eval --audit` behave as documented."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import orjson
import pytest
from cli_runner import invoke, run_process
from paths import FIXTURES

from lmgym.errors import ResultsFileError, UsageError
from lmgym.eval.audit import (
    CHECKS,
    audit,
    audit_run,
    check_metric_disagrees,
    contains_answer,
    copied_from_prompt,
    final_answer,
    read_jsonl,
    reward_up_eval_down,
    reward_without_answer,
    slope,
)
from lmgym.testing import ScriptedServer, last_user_text

AUDIT = FIXTURES / "audit"
PLANTED = [
    "reward_without_answer", "check_metric_disagrees", "copied_from_prompt", "format_without_correctness",
    "length_outliers", "repetition", "identical_group_completions", "constant_answer", "reward_up_eval_down",
]


def found(run_dir: Path, **options) -> set[str]:
    return {f.check for f in audit_run(run_dir, **options).findings}


def lmgym(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    """`lmgym ARGS` in this process, 200 columns wide (the audit table is wide)."""
    return invoke(*args, env={"COLUMNS": "200", **(env or {})}, cwd=cwd)


def record(example_id=0, rollout=0, text="<answer>4</answer>", answer="4", reward=1.0, error=None, **metrics) -> dict:
    return {
        "example_id": example_id, "rollout": rollout, "prompt": [{"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": text}], "answer": answer, "reward": reward,
        "metrics": metrics, "error": error,
    }


def test_fixtures_are_what_the_script_writes(tmp_path):
    spec = importlib.util.spec_from_file_location("make_fixtures", AUDIT / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for path in module.build(tmp_path):
        committed = AUDIT / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run {AUDIT / 'make_fixtures.py'}"
    assert sorted(PLANTED) == sorted(CHECKS)  # one planted run per check


@pytest.mark.parametrize("check", PLANTED)
def test_each_planted_kind_of_gaming_is_found_by_its_check_only(check):
    assert found(AUDIT / check) == {check}


@pytest.mark.parametrize("run", ["clean", "train_clean"])
def test_honest_runs_have_no_findings(run):
    report = audit_run(AUDIT / run)
    assert report.findings == []
    assert report.checks  # the checks did run


def test_planted_findings_name_the_planted_rollouts():
    (finding,) = audit_run(AUDIT / "reward_without_answer").findings
    assert (finding.count, finding.total, finding.severity) == (6, 30, "high")
    assert finding.examples == tuple(f"{i}/r0" for i in range(6))
    (finding,) = audit_run(AUDIT / "length_outliers").findings
    assert finding.examples == ("2/r0", "7/r0", "11/r0") and finding.severity == "medium"
    (finding,) = audit_run(AUDIT / "identical_group_completions").findings
    assert finding.examples == ("0", "1", "2", "3") and finding.total == 12
    (finding,) = audit_run(AUDIT / "reward_up_eval_down").findings
    assert finding.details["train_slope"] > 0 > finding.details["eval_slope"]


def test_contains_answer_matches_whole_tokens_ignoring_case_and_spacing():
    assert contains_answer("<answer>42</answer>", "42")
    assert contains_answer("so x = 42.", "42")
    assert not contains_answer("142 apples", "42")
    assert contains_answer("The  Capital is PARIS", "capital is paris")
    assert final_answer("work\n<answer> 7 </answer>") == "7"
    assert final_answer("work\n\nfinal line\n") == "final line"


def test_a_final_answer_quoted_from_the_prompt_counts_unless_quoting_is_the_task():
    def quiz(answer: str, reply: str) -> dict:
        prompt = "Which is right? (A) the sun orbits the earth (B) the earth orbits the sun"
        return {**record(text=f"<answer>{reply}</answer>", answer=answer), "prompt": [{"role": "user", "content": prompt}]}

    (finding,) = copied_from_prompt([quiz("1543", "the sun orbits the earth")])  # rewarded anyway
    assert finding.count == 1
    assert copied_from_prompt([quiz("the earth orbits the sun", "the earth orbits the sun")]) == []
    assert copied_from_prompt([quiz("1543", "B")]) == []  # too short to say it was copied


def test_failed_rollouts_are_not_audited():
    failed = record(text="nonsense", reward=None, error={"kind": "server", "message": "503"})
    assert reward_without_answer([failed]) == []
    (finding,) = reward_without_answer([failed, record(text="<answer>5</answer>")])
    assert (finding.count, finding.total) == (1, 1)


def test_check_metric_defaults_to_judge_metrics_and_can_be_named():
    records = [record(judge=0.0, correct=0.0), record(rollout=1, judge=1.0, correct=1.0), record(rollout=2, reward=0.0, judge=0.0, correct=0.0)]
    (finding,) = check_metric_disagrees(records)
    assert (finding.count, finding.total, finding.details) == (1, 2, {"metric": "judge"})
    (finding,) = check_metric_disagrees(records, check_metrics=["correct"])
    assert finding.details == {"metric": "correct"}
    with pytest.raises(UsageError, match="--check-metric judge_typo: no rollout has that metric"):
        audit(records, check_metrics=["judge_typo"])


def test_unknown_check_in_skip_is_a_usage_error_and_skip_works():
    with pytest.raises(UsageError, match="unknown check"):
        audit([record()], skip=["nope"])
    assert found(AUDIT / "reward_without_answer", skip=["reward_without_answer"]) == set()
    # above every reward (the off-by-one answers earn 1.2), nothing counts as high
    assert found(AUDIT / "reward_without_answer", reward_threshold=1.3) == set()


def test_slope_and_trend_window():
    assert slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([1, 1], [0, 5]) == 0.0
    up = [{"step": s, "reward": 0.01 * s} for s in range(1, 31)]
    down = [{"step": s, "eval/reward": 0.5 - 0.01 * s} for s in (0, 10, 20, 30)]
    (finding,) = reward_up_eval_down(up + down)
    assert finding.count == 4 and finding.examples == ("steps 0–30",)
    assert reward_up_eval_down(up + down, last_steps=15) == []  # only 2 eval points in the window
    assert reward_up_eval_down(up + down, eval_metric="eval/other") == []


def test_reading_is_read_only_and_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    content = orjson.dumps(record()) + b"\n" + b'{"example_id": 1, "rollo'
    path.write_bytes(content)
    assert len(read_jsonl(path)) == 1
    assert path.read_bytes() == content  # a run still being written is never rewritten
    path.write_bytes(b"{bad\n" + orjson.dumps(record()) + b"\n")
    with pytest.raises(ResultsFileError, match="results.jsonl:1"):
        read_jsonl(path)


def test_cli_prints_the_table_and_fails_on_findings_when_asked(tmp_path):
    """The smoke test of `lmgym audit` as its own process."""
    run = tmp_path / "run"
    shutil.copytree(AUDIT / "copied_from_prompt", run)
    result = run_process("audit", str(run), "--fail-on-findings", "--json", cwd=AUDIT, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Reward-hacking audit" in result.stdout and "copied_from_prompt" in result.stdout
    assert re.search(r"high\s+│\s+6/30\s+│\s+20%\s+│\s+0/r2, 1/r2, 2/r2 \(\+3\)", result.stdout)
    saved = orjson.loads((run / "audit.json").read_bytes())
    assert [f["check"] for f in saved["findings"]] == ["copied_from_prompt"] and saved["scored"] == 35


def test_cli_exit_codes(tmp_path):
    assert lmgym("audit", str(AUDIT / "copied_from_prompt")).exit_code == 0  # findings, but not asked to fail
    clean = lmgym("audit", str(AUDIT / "clean"), "--fail-on-findings")
    assert clean.exit_code == 0 and "audit: no findings" in clean.stdout
    missing = lmgym("audit", str(tmp_path))
    assert missing.exit_code == 2 and "neither results.jsonl nor metrics.jsonl" in missing.stderr
    assert lmgym("audit", str(AUDIT / "clean"), "--skip", "nope").exit_code == 2


def test_eval_audit_runs_the_audit_after_the_summary(tmp_path):
    def solve(request) -> str:
        a, b = map(int, re.findall(r"\d+", last_user_text(request)))
        return f"<answer>{a + b}</answer>"

    with ScriptedServer(reply=solve) as server:
        run = tmp_path / "run"
        result = lmgym("eval", "sum-env", "-m", "s", "-b", server.base_url, "-n", "3", "-r", "2", "-o", str(run), "--audit",
                       cwd=FIXTURES, env={"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("Evaluation summary") < result.stdout.index("audit: no findings")


def test_checks_an_environment_declares_inapplicable_are_skipped_and_said_so(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(AUDIT / "reward_without_answer", run)
    metadata = orjson.loads((run / "metadata.json").read_bytes())
    metadata["audit_skip"] = {"reward_without_answer": "graded on the final [db] state"}
    (run / "metadata.json").write_bytes(orjson.dumps(metadata))
    report = audit_run(run)
    assert report.findings == [] and report.skipped == {"reward_without_answer": "graded on the final [db] state"}
    assert "reward_without_answer" not in report.checks
    result = lmgym("audit", str(run))
    assert result.exit_code == 0 and "skipped reward_without_answer (graded on the final [db] state)" in result.stdout


def test_support_desk_declares_that_its_answer_is_not_in_the_text():
    from lmgym.registry import load_environment

    env = load_environment("support-desk", user_model="m", user_base_url="http://127.0.0.1:9/v1")
    assert "reward_without_answer" in env.audit_skip


STATE_GRADED_ENV = '''
"""Graded on the state a rollout leaves, not on its text."""
from lmgym import Rubric, SingleTurnEnv


def load_environment():
    return SingleTurnEnv(
        eval_dataset=[{"question": f"Store {i}.", "answer": str(i)} for i in range(3)],
        rubric=Rubric([lambda completion: 1.0]),  # the stored value, say: never in the reply
        audit_skip={"reward_without_answer": "graded on the [store] state"},
    )
'''


def test_an_environments_declared_skips_reach_the_audit_of_its_eval_run(tmp_path):
    folder = tmp_path / "environments" / "state-graded"
    folder.mkdir(parents=True)
    (folder / "state_graded.py").write_text(STATE_GRADED_ENV)
    run = tmp_path / "run"
    def store(request) -> str:
        return "Stored " + {"0": "nothing", "1": "one", "2": "two"}[re.findall(r"\d", last_user_text(request))[0]]

    with ScriptedServer(reply=store) as server:
        result = lmgym("eval", "state-graded", "-m", "s", "-b", server.base_url, "-n", "3", "-r", "1", "-o", str(run), "--audit",
                       cwd=tmp_path, env={"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 0, result.stderr
    assert "audit: skipped reward_without_answer (graded on the [store] state)" in result.stdout
    assert "audit: no findings" in result.stdout
    assert orjson.loads((run / "metadata.json").read_bytes())["audit_skip"] == {"reward_without_answer": "graded on the [store] state"}
    assert found(run) == set() and found(run, skip=[]) == set()
    undeclared = tmp_path / "undeclared"  # the same rollouts without the declaration are flagged
    shutil.copytree(run, undeclared)
    metadata = orjson.loads((undeclared / "metadata.json").read_bytes())
    del metadata["audit_skip"]
    (undeclared / "metadata.json").write_bytes(orjson.dumps(metadata))
    assert found(undeclared) == {"reward_without_answer"}
