"""Datasets from runs: `lmgym export` and `lmgym eval --save-dataset`.

The run directory is written with the real Rollout.to_dict records (a tool-call
transcript, a failed rollout, metrics that differ between rollouts) and a torn last line.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import orjson
import pandas as pd
import pytest
from cli_runner import invoke, run_process
from paths import FIXTURES

from lmgym import errors
from lmgym.eval import export
from lmgym.eval.results import ResultsWriter
from lmgym.testing import ScriptedServer, last_user_text, tool_call
from lmgym.types import Example, Rollout, RolloutError, Turn, Usage

CALL = tool_call("calculate", {"expression": "12 * 34", "note": {"nested": [1, 2]}}, "call_7")
TOOL_TRANSCRIPT = [
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_7", "content": "408"},
    {"role": "assistant", "content": "<answer>408</answer>"},
]


def rollouts() -> list[Rollout]:
    prompt = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "What is 12 * 34?"}]
    solved = Rollout(
        Example(0, prompt, answer="408", info={"level": 2}, task="calc"),
        index=0,
        turns=[Turn(TOOL_TRANSCRIPT[0], [TOOL_TRANSCRIPT[1]]), Turn(TOOL_TRANSCRIPT[2])],
        state={"stop_reason": "done"},
        reward=1.2,
        metrics={"correct_answer": 1.0, "format_reward": 1.0, "tool_calls": 1.0},
        usage=Usage(30, 12, 2),
        latency_s=0.5,
    )
    failed = Rollout(
        Example(0, prompt, answer="408", task="calc"),
        index=1,
        error=RolloutError("server", "HTTP 503 after 5 retries"),
        usage=Usage(0, 0, 0),
    )
    other = Rollout(
        Example(1, [{"role": "user", "content": "2+2?"}], answer=4, task="add"),
        turns=[Turn({"role": "assistant", "content": "<answer>4</answer>"})],
        state={"stop_reason": "done"},
        reward=1.0,
        metrics={"correct_answer": 1.0},
        usage=Usage(5, 3, 1),
    )
    return [solved, failed, other]


@pytest.fixture
def run_dir(tmp_path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    writer = ResultsWriter(run / "results.jsonl")
    writer.write(r.to_dict() for r in rollouts())
    writer.close()
    with open(run / "results.jsonl", "ab") as file:
        file.write(b'{"example_id": 2, "rollout": 0, "prom')  # killed mid-write
    return run


def check_rows(rows: list[dict]) -> None:
    """The three rollouts, the tool-call transcript intact, the torn line gone."""
    assert [(r["example_id"], r["rollout"]) for r in rows] == [(0, 0), (0, 1), (1, 0)]
    solved, failed, other = rows
    assert export.messages_of(solved["completion"]) == TOOL_TRANSCRIPT
    assert export.messages_of(solved["prompt"])[1] == {"role": "user", "content": "What is 12 * 34?"}
    assert solved["reward"] == 1.2 and solved["metric_tool_calls"] == 1.0 and solved["num_turns"] == 2
    assert (solved["prompt_tokens"], solved["completion_tokens"], solved["latency_s"]) == (30, 12, 0.5)
    assert solved["answer"] == "408" and solved["info"] == '{"level": 2}' and solved["stop_reason"] == "done"
    assert solved["error_kind"] is None and solved["task"] == "calc"
    assert failed["reward"] is None and failed["metric_correct_answer"] is None
    assert (failed["error_kind"], failed["error_message"]) == ("server", "HTTP 503 after 5 retries")
    assert failed["completion"] == "[]" and failed["num_turns"] == 0
    assert other["answer"] == "4" and other["metric_tool_calls"] is None and other["metric_correct_answer"] == 1.0


def test_rows_flatten_metrics_and_keep_errors(run_dir):
    records = export.load_records(run_dir)
    check_rows(export.to_rows(records))
    assert len((run_dir / "results.jsonl").read_bytes().splitlines()) == 3  # the torn line is dropped


def test_hf_round_trip_keeps_the_tool_call_transcript(run_dir, tmp_path):
    dataset, path = export.export_run(run_dir, "hf", tmp_path / "ds")
    loaded = datasets.load_from_disk(str(path))
    check_rows(loaded.to_list())
    assert loaded.features == dataset.features
    assert loaded.features["metric_format_reward"].dtype == "float64"
    assert loaded.features["example_id"].dtype == "int64"
    assert loaded.filter(lambda r: r["metric_correct_answer"] == 1.0).num_rows == 2


def test_parquet_and_jsonl_round_trips(run_dir):
    _, parquet = export.export_run(run_dir, "parquet")
    assert parquet == run_dir / "results.parquet"
    frame = pd.read_parquet(parquet)
    check_rows(frame.astype(object).where(frame.notna(), None).to_dict("records"))
    check_rows(datasets.Dataset.from_parquet(str(parquet)).to_list())
    _, jsonl = export.export_run(run_dir, "jsonl")
    check_rows([orjson.loads(line) for line in jsonl.read_bytes().splitlines()])


def test_mixed_example_ids_become_strings_and_all_null_columns_keep_their_type(tmp_path):
    records = [r.to_dict() for r in rollouts()]
    records[2]["example_id"] = "q-1"
    dataset = export.to_dataset([records[1], records[2]])
    assert dataset["example_id"] == ["0", "q-1"] and dataset.features["example_id"].dtype == "string"
    errored = export.to_dataset([records[1]])
    assert errored.features["reward"].dtype == "float64" and errored["reward"] == [None]


def test_existing_output_is_refused_unless_overwrite(run_dir, tmp_path):
    export.export_run(run_dir, "hf", tmp_path / "ds")
    with pytest.raises(errors.UsageError, match="already exists; pass --overwrite"):
        export.export_run(run_dir, "hf", tmp_path / "ds")
    export.export_run(run_dir, "hf", tmp_path / "ds", overwrite=True)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(errors.UsageError, match="holds no saved dataset"):
        export.export_run(run_dir, "hf", tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "mine.txt").exists()


def test_missing_run_files_are_named(tmp_path):
    with pytest.raises(errors.ResultsFileError, match="is not a directory"):
        export.load_records(tmp_path / "nowhere")
    with pytest.raises(errors.ResultsFileError, match=r"results\.jsonl is missing"):
        export.load_records(tmp_path)


def test_export_cli_writes_parquet(run_dir, tmp_path):
    """The smoke test of `lmgym export` as its own process."""
    result = run_process("export", str(run_dir), "--format", "parquet", "-o", str(tmp_path / "out.parquet"), cwd=FIXTURES, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "3 rollouts" in result.stdout and len(pd.read_parquet(tmp_path / "out.parquet")) == 3


def lmgym_export(*args: str):
    """`lmgym export ARGS` in this process; `flat` is its output with rich's line wrapping undone."""
    return invoke("export", *args)


def test_export_cli_errors_name_the_problem(run_dir, tmp_path, monkeypatch):
    result = lmgym_export(str(tmp_path / "empty"))
    assert result.exit_code == 2 and "is not a directory" in result.flat
    result = lmgym_export(str(run_dir), "--format", "csv")
    assert result.exit_code == 2 and "csv" in result.flat
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    result = lmgym_export(str(run_dir), "--push-to-hub", "not a/repo/id")
    assert result.exit_code == 2 and "not a dataset repository id" in result.flat
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    result = lmgym_export(str(run_dir), "--push-to-hub", "someone/evals")
    assert result.exit_code == 2 and "HF_HUB_OFFLINE is set" in result.flat
    assert not (run_dir / "dataset").exists()


def test_push_without_a_token_fails_before_any_work(run_dir, tmp_path, monkeypatch):
    # no token anywhere huggingface_hub looks: the environment, or the token file (of an empty HF_HOME)
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", "")
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    result = lmgym_export(str(run_dir), "--push-to-hub", "someone/evals")
    assert result.returncode == 2 and "no Hugging Face token" in result.stderr
    assert not (run_dir / "dataset").exists()


def test_push_uploads_the_exported_dataset(run_dir, monkeypatch):
    pushed = []
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", lambda self, repo_id, **kw: pushed.append((self, repo_id, kw)))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_dummy")
    result = lmgym_export(str(run_dir), "--push-to-hub", "someone/evals", "--private")
    assert result.exit_code == 0, result.output
    [(dataset, repo_id, kwargs)] = pushed
    assert repo_id == "someone/evals" and kwargs == {"token": "hf_dummy", "private": True}
    check_rows(dataset.to_list())
    assert "huggingface.co/datasets/someone/evals" in result.flat


def test_eval_save_dataset(tmp_path):
    def solve(request):
        a, b = map(int, last_user_text(request).removeprefix("What is ").rstrip("?").split("+"))
        return f"<answer>{a + b}</answer>"

    with ScriptedServer(reply=solve) as server:
        result = invoke(
            "eval", "sum-env", "-m", "s", "-b", server.base_url, "-n", "3", "-r", "2",
            "-o", str(tmp_path / "run"), "--save-dataset", str(tmp_path / "ds"), cwd=FIXTURES, env={"OPENAI_API_KEY": "sk-test"},
        )
    assert result.returncode == 0, result.stderr
    rows = datasets.load_from_disk(str(tmp_path / "ds")).to_list()
    assert sorted((r["example_id"], r["rollout"]) for r in rows) == [(i, j) for i in range(3) for j in range(2)]
    assert all(r["reward"] == 1.0 and r["metric_correct"] == 1.0 and r["error_kind"] is None for r in rows)
    assert export.messages_of(rows[0]["completion"])[0]["role"] == "assistant"
