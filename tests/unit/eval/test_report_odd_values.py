"""`lmgym view` of a results file whose values are not what lmgym writes (a hand-made or
foreign file): a metric that is text, a null reward. The report is built; text metrics
are shown in the rows but not averaged or drawn; a null reward shows as missing."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from cli_runner import invoke

from lmgym.eval.results import ResultsWriter, write_metadata
from lmgym.types import Example, Rollout, Turn, Usage


def record(example_id: int, reward: float | None, metrics: dict) -> dict:
    example = Example(example_id, [{"role": "user", "content": f"What is {example_id} + 2?"}], answer=str(example_id + 2))
    turn = Turn({"role": "assistant", "content": str(example_id + 2)})
    rollout = Rollout(example, 0, turns=[turn], reward=reward, metrics=metrics, usage=Usage(10, 2, 1), latency_s=0.5,
                      state={"turn": 1, "stop_reason": "done"})
    return rollout.to_dict()


def write_run(run_dir: Path, records: list[dict]) -> Path:
    run_dir.mkdir(parents=True)
    writer = ResultsWriter(run_dir / "results.jsonl")
    writer.write(records)
    writer.close()
    write_metadata(run_dir, {"config": {"env": "calc-env", "model": "m", "pass_threshold": 1.0}, "status": "completed"})
    return run_dir


def view(run_dir: Path) -> dict:
    """Run `lmgym view` and return the data embedded in the page it wrote."""
    result = invoke("view", str(run_dir), env={"COLUMNS": "200"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    page = Path(result.stdout.strip()).read_text()
    return orjson.loads(re.search(r'<script type="application/json" id="lmgym-data">(.*?)</script>', page, re.DOTALL).group(1))


def test_a_text_metric_is_shown_but_not_summarised_or_drawn(tmp_path):
    records = [
        record(0, 1.0, {"correct": 1.0, "verdict": "yes"}),
        record(1, 0.0, {"correct": 0.0, "verdict": "no, because <b>"}),
        record(2, 1.0, {"correct": 1.0, "verdict": 0.5}),  # a number among the text is drawn
    ]
    data = view(write_run(tmp_path / "run", records))
    assert data["summary"]["metrics"] == {"correct": 2 / 3, "verdict": 0.5}  # the mean of its numbers
    assert data["summary"]["reward_mean"] == 2 / 3
    assert [r["metrics"]["verdict"] for r in data["rows"]] == ["yes", "no, because <b>", 0.5]
    assert data["metric_names"] == ["correct", "verdict"]
    assert data["distributions"]["metrics"]["verdict"]["n"] == 1
    assert data["distributions"]["metrics"]["correct"]["n"] == 3


def test_a_metric_that_is_only_text_gets_no_histogram(tmp_path):
    data = view(write_run(tmp_path / "run", [record(0, 1.0, {"verdict": "yes"}), record(1, 0.0, {"verdict": "no"})]))
    assert data["distributions"]["metrics"] == {} and data["summary"]["metrics"] == {}
    assert [r["metrics"] for r in data["rows"]] == [{"verdict": "yes"}, {"verdict": "no"}]


def test_a_null_reward_is_shown_as_missing_and_left_out_of_the_summary(tmp_path):
    records = [record(0, 1.0, {"correct": 1.0}), record(1, None, {"correct": 0.0}), record(2, 0.0, {"correct": 0.0})]
    assert records[1]["reward"] is None and records[1]["error"] is None
    data = view(write_run(tmp_path / "run", records))
    rewards = [r["reward"] for r in data["rows"]]
    assert rewards == [1.0, None, 0.0]
    assert [r["zero_reward"] for r in data["rows"]] == [False, False, True]
    summary = data["summary"]
    assert summary["scored"] == 2 and summary["reward_mean"] == 0.5 and summary["errors"] == {}
    assert data["distributions"]["reward"]["n"] == 2
    assert any("1 rollouts have no error and no numeric reward" in note for note in data["notes"])


def test_a_run_where_no_reward_is_a_number_still_renders(tmp_path):
    data = view(write_run(tmp_path / "run", [record(0, None, {"verdict": "yes"})]))
    assert data["summary"] is None and data["distributions"]["reward"]["n"] == 0
    assert data["rows"][0]["reward"] is None and data["rows"][0]["metrics"] == {"verdict": "yes"}
