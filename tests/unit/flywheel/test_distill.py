"""`lmgym distill`: a scripted teacher over real HTTP, rejection sampling, and a tiny student.

The teacher reverses the digits right, except that it never does for strings whose
value is divisible by 4 and gets those equal to 1 mod 4 wrong on the first try only: so
`-k 2` shows both rejection (examples with no passing rollout) and retries that pass.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from cli_runner import ROOT, invoke, run_process
from records import jsonl

from lmgym import errors
from lmgym.flywheel import distill as ds
from lmgym.registry import load_environment
from lmgym.testing import ScriptedServer, last_user_text


def scripted_teacher():
    attempts: Counter[str] = Counter()

    def reply(request) -> str:
        digits = last_user_text(request)
        attempts[digits] += 1
        if int(digits) % 4 == 0 or (int(digits) % 4 == 1 and attempts[digits] == 1):
            return digits  # not reversed
        return digits[::-1]

    return reply


def expected_counts(n: int) -> tuple[int, int]:
    """(passing rollouts, examples with one) of the scripted teacher with k=2."""
    passing = examples = 0
    for example in load_environment("reverse-digits").dataset[:n]:
        digits = example.prompt[-1]["content"]
        right = [digits == digits[::-1] or not (int(digits) % 4 == 0 or (int(digits) % 4 == 1 and i == 0)) for i in range(2)]
        passing += sum(right)
        examples += any(right)
    return passing, examples


def lmgym(*args: str):
    """`lmgym ARGS` in this process, from the repository root."""
    return invoke(*args, cwd=ROOT, env={"COLUMNS": "200", "OPENAI_API_KEY": "sk-test"})


@pytest.fixture
def teacher():
    with ScriptedServer(scripted_teacher()) as server:
        yield server


# --- selection ------------------------------------------------------------------------------


def record(example_id, rollout, reward, text, error=None):
    return {"example_id": example_id, "rollout": rollout, "reward": reward, "error": error,
            "prompt": [{"role": "user", "content": f"q{example_id}"}], "completion": [{"role": "assistant", "content": text}]}


def test_select_keeps_distinct_passing_rollouts_best_first_capped():
    tool_turns = [{"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                  {"role": "tool", "content": "4", "tool_call_id": "c"}, {"role": "assistant", "content": "4"}]
    records = [
        record(0, 0, 1.0, "a"), record(0, 1, 1.0, "a"), record(0, 2, 1.5, "b"), record(0, 3, 1.2, "c"),
        record(1, 0, 0.5, "x"), record(1, 1, None, None, error={"kind": "server", "message": "503"}),
        {**record(2, 0, 1.0, ""), "completion": tool_turns},
    ]
    selection = ds.select_rollouts(records, 1.0, max_per_example=2, teacher="t")
    assert [(r["example_id"], r["rollout"]) for r in selection.rows] == [("0", 2), ("0", 3), ("2", 0)]
    assert selection.rows[2]["completion"] == tool_turns  # tool calls and tool results are learnt as they were
    assert selection.rows[0] | {"completion": None} == {
        "prompt": [{"role": "user", "content": "q0"}], "completion": None, "example_id": "0", "rollout": 2,
        "reward": 1.5, "teacher": "t"}
    assert selection.to_dict() == {"examples": 3, "rollouts": 7, "errors": 1, "passing": 5,
                                   "acceptance_rate": 5 / 6, "examples_passing": 2, "kept": 3}
    assert len(ds.select_rollouts(records, 1.0, max_per_example=4).rows) == 4  # "a" once: identical rollouts are one


def test_train_examples_never_come_from_the_eval_split():
    env = load_environment("reverse-digits", num_examples=20, num_eval_examples=10)
    assert ds.train_examples(env, 5) == env.dataset[:5]
    assert set(e.id for e in ds.train_examples(env, -1, seed=1)) == set(e.id for e in env.dataset)
    env.dataset = None
    with pytest.raises(errors.UsageError, match="no training split"):
        ds.train_examples(env)


# --- the command -------------------------------------------------------------------------------


def test_distill_writes_sft_data_from_passing_teacher_rollouts(teacher, tmp_path):
    """The smoke test of `lmgym distill` as its own process; the runs after it are in this one."""
    out = tmp_path / "distill"
    args = ["distill", "--teacher", "scripted", "--env", "reverse-digits", "--min-reward", "1", "-b", teacher.base_url,
            "-k", "2", "-n", "40", "-o", str(out)]
    result = run_process(*args, env={"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 0, result.stderr
    passing, examples = expected_counts(40)
    assert f"{examples} / 40" in result.stdout and f"{passing / 80:.1%}" in result.stdout
    train = {e.prompt[-1]["content"] for e in load_environment("reverse-digits").dataset}
    assert len(teacher.requests) == 80 and all(last_user_text(r) in train for r in teacher.requests)
    rows = jsonl(out / ds.SFT_FILE)
    assert len(rows) == examples  # the right reply is one string: one distinct rollout per example
    assert all(r["completion"] == [{"role": "assistant", "content": r["prompt"][-1]["content"][::-1]}] for r in rows)
    from datasets import load_from_disk

    assert load_from_disk(str(out / ds.SFT_DATASET))["completion"] == [r["completion"] for r in rows]
    report = orjson.loads((out / ds.SUMMARY_FILE).read_bytes())
    assert report["selection"]["passing"] == passing and report["selection"]["kept"] == examples
    assert len(jsonl(out / ds.TEACHER_DIR / "results.jsonl")) == 80
    assert lmgym(*args).returncode == 0 and len(teacher.requests) == 80  # run again: the teacher run is complete
    other = [a if a != "scripted" else "another-teacher" for a in args]
    result = lmgym(*other)  # never counts the first teacher's rollouts as another's
    assert result.returncode == 2 and "holds another teacher run" in result.stderr and "model='another-teacher'" in result.stderr
    assert len(teacher.requests) == 80


def test_bad_student_config_fails_before_the_teacher_runs(teacher, tmp_path):
    result = lmgym("distill", "--teacher", "scripted", "--env", "reverse-digits", "--min-reward", "1", "-b", teacher.base_url,
                   "-o", str(tmp_path / "d"), "--student", "configs/reverse-digits.toml", "--sft.lrr", "1")
    assert result.returncode == 2 and "did you mean 'sft.lr'" in result.stderr
    result = lmgym("distill", "--teacher", "scripted", "--env", "reverse-digits", "--min-reward", "1", "-b", teacher.base_url,
                   "-o", str(tmp_path / "d"), "--sft.lr", "1")
    assert result.returncode == 2 and "go with --student" in result.stderr
    assert teacher.requests == []


def test_distill_into_the_tiny_student_improves_it(teacher, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "distill"
    result = lmgym("distill", "--teacher", "scripted", "--env", "reverse-digits", "--min-reward", "1", "-b", teacher.base_url,
                   "-k", "2", "-n", "128", "-o", str(out), "--student", "configs/reverse-digits.toml", "--eval-n", "50",
                   "--sft.batch_size", "8", "--sft.epochs", "4", "--logging.console_every", "0")
    assert result.returncode == 0, result.stderr
    assert "Student on 50 eval examples" in result.stdout
    student = orjson.loads((out / ds.SUMMARY_FILE).read_bytes())["student"]
    before, after = student["before"], student["after"]
    # A random tiny model gets no digit right; ~45 SFT steps on exact data get some right.
    # Exact matches need longer training, so they are not asserted.
    assert before["digit_accuracy"] == 0.0 and after["digit_accuracy"] > 0.03
    assert after["reward"] > before["reward"] and after["errors"] == 0.0
    assert (out / ds.STUDENT_DIR / "final" / "config.json").exists()
    eval_questions = {e.prompt[-1]["content"] for e in load_environment("reverse-digits").eval_dataset}
    assert not eval_questions & {last_user_text(r) for r in teacher.requests}  # the teacher never saw the eval split


def test_the_student_loads_with_its_configs_model_options(tmp_path, monkeypatch):
    """The student's `[model]` options reach its loads (they were dropped: a pinned hub
    student was evaluated at whatever revision the cache held, a remote-code one not at all)."""
    pytest.importorskip("torch")
    from lmgym.train.config import load_config

    kernels = []

    def evaluated(model, *args, **kwargs):  # which attention kernel each evaluation's model runs
        kernels.append(model.config._attn_implementation)
        return {"reward": 0.0}

    monkeypatch.setattr(ds, "evaluate_policy", evaluated)
    config = load_config(ROOT / "configs" / "reverse-digits.toml", [
        "model.attn_implementation=eager", "sft.max_steps=1", "sft.batch_size=2", "logging.console_every=0"])
    env = load_environment("reverse-digits")
    ds.distill_student(config, env, env.eval_dataset[:2], tmp_path / "student")
    assert kernels == ["eager", "eager"]  # before and after the fine-tuning
