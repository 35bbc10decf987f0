"""`lmgym view`: the data a report is built from, the embedding, and the command."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from cli_runner import invoke, run_process
from sample_runs import SYSTEM, XSS, sample_records, write_sample_run, write_training_run

from lmgym.errors import ResultsFileError
from lmgym.eval import report
from lmgym.eval.report import Clipper, MessageTable, curves, embed_json, histogram, is_truncated, report_data, rollout_row
from lmgym.eval.results import write_metadata


# -- rows ----------------------------------------------------------------------------------
def test_rows_carry_flags_and_share_repeated_messages():
    table = MessageTable(Clipper())
    rows = [rollout_row(r, table) for r in sample_records()]
    assert [r["errored"] for r in rows] == [False, False, False, True, False, False]
    assert [r["zero_reward"] for r in rows] == [False, False, True, False, False, False]
    assert [r["truncated"] for r in rows] == [False, False, False, False, True, True]
    assert rows[3]["reward"] is None and rows[3]["error"] == {"kind": "server", "message": "HTTP 503 after 5 retries"}
    # the system prompt is stored once, for all six rollouts
    assert sum(m == SYSTEM for m in table.messages) == 1
    assert {r["messages"][0] for r in rows} == {table.messages.index(SYSTEM)}
    first = [table.messages[i] for i in rows[0]["messages"]]
    assert [m["role"] for m in first] == ["system", "user", "assistant", "tool", "assistant"]
    assert first[2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert rows[0]["prompt_len"] == 2 and rows[0]["num_turns"] == 2
    assert rows[0]["answer"] == "2" and json.loads(rows[0]["state"])["turn"] == 2


def test_truncation_is_the_token_or_the_turn_limit():
    assert is_truncated({"finish_reason": "length"})
    assert is_truncated({"stop_reason": "max_turns"})
    assert not is_truncated({"finish_reason": "stop", "stop_reason": "done"})


def test_long_strings_are_cut_with_a_note_anywhere_in_a_value():
    clip = Clipper(max_chars=10)
    value = clip({"content": "x" * 25, "parts": [{"text": "short"}, "y" * 11], "n": 3})
    assert value["content"].startswith("x" * 10 + "\n… [15 more characters")
    assert value["parts"][0] == {"text": "short"} and value["parts"][1].startswith("y" * 10 + "\n… [1 more")
    assert value["n"] == 3 and clip.cuts == 2


# -- histograms and curves -----------------------------------------------------------------
def test_histogram_of_few_values_has_one_bar_per_value():
    hist = histogram([1.0, 0.0, 1.0, None, float("nan"), 0.5])
    assert hist["discrete"] and hist["n"] == 4
    assert [(b["lo"], b["count"]) for b in hist["bins"]] == [(0.0, 1), (0.5, 1), (1.0, 2)]
    assert hist["mean"] == 0.625 and (hist["min"], hist["max"]) == (0.0, 1.0)


def test_histogram_of_many_values_uses_equal_bins_with_the_maximum_in_the_last():
    hist = histogram([i / 100 for i in range(101)], max_bins=4)
    assert not hist["discrete"]
    assert [b["count"] for b in hist["bins"]] == [25, 25, 25, 26]
    assert hist["bins"][0]["lo"] == 0.0 and hist["bins"][-1]["hi"] == pytest.approx(1.0)
    assert histogram([])["n"] == 0 and histogram([])["bins"] == []


def test_curves_keep_the_last_value_of_a_repeated_step_and_group_main_charts():
    rows = [{"step": 1, "reward": 0.1, "loss": 1.0}, {"step": 2, "reward": 0.2, "loss": None},
            {"step": 2, "reward": 0.3}, {"step": 0, "eval/reward": 0.05}, {"step": 3, "note": "text"}]
    result = curves(rows)
    assert result["series"]["reward"] == [[1, 0.1], [2, 0.3]]
    assert result["series"]["loss"] == [[1, 1.0], [2, None]]
    assert "note" not in result["series"]
    assert result["main"][0] == {"title": "reward", "keys": ["reward", "eval/reward"]}
    assert result["steps"] == 2 and result["last"]["reward"] == 0.3  # step 3 logged no number
    assert curves([]) is None


def test_sft_rows_are_drawn_against_their_own_steps_and_never_count_as_rl_steps():
    rows = [{"sft_step": s, "sft/loss": 1.0 / s} for s in range(1, 97)] + [{"step": s, "reward": 0.1} for s in range(1, 61)]
    result = curves(rows)
    assert result["steps"] == 60  # a 60-step run with 96 SFT steps before it
    assert result["series"]["sft/loss"][-1] == [96, pytest.approx(1 / 96)] and result["series"]["reward"][-1] == [60, 0.1]
    assert curves([{"sft_step": 3, "sft/loss": 0.5}])["steps"] == 3


# -- the whole report ----------------------------------------------------------------------
def test_report_data_of_an_eval_run(tmp_path):
    data = report_data(write_sample_run(tmp_path / "run"))
    assert data["title"] == "calc-env × scripted"
    assert data["summary"]["rollouts"] == 6 and data["summary"]["errors"] == {"server": 1}
    assert data["distributions"]["reward"]["n"] == 5
    assert set(data["distributions"]["metrics"]) == {"correct", "format"}
    assert data["metric_names"] == ["correct", "format"] and len(data["rows"]) == 6
    assert data["curves"] is None and data["notes"] == []


def test_the_report_counts_passes_by_the_runs_own_criterion(tmp_path):
    # By reward >= 1, rollouts 0 and 1 of the 5 scored pass; by `format` >= 1, 0, 4 and 5 do.
    by_reward = report_data(write_sample_run(tmp_path / "by-reward"))["summary"]
    run = write_sample_run(tmp_path / "by-format")
    write_metadata(run, {"config": {"env": "calc-env", "model": "scripted", "pass_metric": "format", "pass_threshold": 1.0}})
    by_format = report_data(run)["summary"]
    assert (by_reward["pass_metric"], by_reward["pass_at_k"]["1"]) == ("reward", pytest.approx(0.4))
    assert (by_format["pass_metric"], by_format["pass_at_k"]["1"]) == ("format", pytest.approx(0.6))


def test_report_data_of_a_training_run(tmp_path):
    data = report_data(write_training_run(tmp_path / "train"))
    assert data["rows"] == [] and data["summary"] is None
    assert [c["title"] for c in data["curves"]["main"]] == ["reward", "loss", "KL", "tokens/s", "SFT loss"]
    assert data["curves"]["others"] == ["eval/errors", "grad_norm", "lr"]
    assert data["config_text"].startswith("[env]")
    assert any("no sampled rollouts" in note for note in data["notes"])


def test_a_torn_last_line_is_skipped_and_the_run_dir_left_untouched(tmp_path):
    run = write_sample_run(tmp_path / "run")
    results = run / "results.jsonl"
    results.write_bytes(results.read_bytes() + b'{"example_id": 9, "rollo')  # a live run mid-write
    before = results.read_bytes()
    assert len(report_data(run)["rows"]) == 6
    assert results.read_bytes() == before  # read_results would have repaired it in place


def test_a_directory_without_results_or_metrics_names_both(tmp_path):
    with pytest.raises(ResultsFileError, match="neither results.jsonl .* nor metrics.jsonl"):
        report_data(tmp_path)
    with pytest.raises(ResultsFileError, match="is not a directory"):
        report_data(tmp_path / "missing")


def test_embedded_json_cannot_close_the_script_element(tmp_path):
    text = embed_json({"content": XSS + "<!-- x"})
    assert "<" not in text and json.loads(text) == {"content": XSS + "<!-- x"}
    page = report.build_report(write_sample_run(tmp_path / "run"))
    assert page.count("<script") == 2 and page.count("</script>") == 2  # the data tag and the code
    data = re.search(r'<script type="application/json" id="lmgym-data">(.*?)</script>', page, re.DOTALL).group(1)
    assert XSS in orjson.dumps(orjson.loads(data)).decode()


def test_report_is_one_file_with_no_address_to_fetch(tmp_path):
    page = report.build_report(write_sample_run(tmp_path / "run"))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "http://www.w3.org/2000/svg" in page  # the SVG namespace, a name and not a request
    assert len(re.findall(r"https?://", page)) == 1


def test_metric_file_names_match_the_trainer():
    from lmgym.train.metrics import METRICS_FILE

    assert report.METRICS_FILE == METRICS_FILE


# -- the command ---------------------------------------------------------------------------
def lmgym_view(*args: str):
    """`lmgym view ARGS` in this process, 200 columns wide (rich wraps error lines at the terminal width)."""
    return invoke("view", *args, env={"COLUMNS": "200"})


def test_view_writes_the_report_and_prints_its_path(tmp_path):
    """The smoke test of `lmgym view` as its own process."""
    run = write_sample_run(tmp_path / "run")
    result = run_process("view", str(run), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(run / "report.html")
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")
    other = tmp_path / "out" / "r.html"
    assert lmgym_view(str(run), "-o", str(other)).returncode == 0 and other.exists()


def test_view_of_an_empty_directory_is_one_clear_error(tmp_path):
    result = lmgym_view(str(tmp_path))
    assert result.returncode == 2
    assert "neither results.jsonl" in result.stderr and "metrics.jsonl" in result.stderr
    assert "Traceback" not in result.stderr


def test_files_with_nothing_in_them_yet_say_so(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "results.jsonl").write_text("")
    assert report_data(tmp_path)["notes"] == ["results.jsonl holds no rollouts yet.", "metrics.jsonl holds no steps yet."]
