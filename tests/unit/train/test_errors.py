"""Bad input to `lmgym train` and `lmgym sft` ends in one `error:` line that names the
file, the field and the value, never in a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
# imported now: transformers' log handler keeps the stderr of its import, which must not be a
# CliRunner stream that is closed after one command
pytest.importorskip("transformers")

from cli_runner import assert_one_error  # noqa: E402  (tests/cli_runner.py)
from cli_runner import invoke as lmgym
from paths import ROOT

from lmgym.errors import UsageError  # noqa: E402
from lmgym.train.config import load_config  # noqa: E402

CONFIG = str(ROOT / "configs" / "reverse-digits.toml")
FAST = [
    "--algorithm.prompts_per_step", "2", "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8",
    "--eval.every", "0", "--logging.console_every", "0", "--sft.max_steps", "2", "--sft.batch_size", "8",
    "--env.args", "{num_examples = 50, num_eval_examples = 10}", "--trainer.max_steps", "1",
]


# ------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_a_non_finite_number_in_a_config_file(tmp_path, value):
    config = tmp_path / "run.toml"
    config.write_text(f"[trainer]\nlr = {value}\n")
    result = lmgym("train", str(config), *FAST, "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, str(config), f"trainer.lr = {value}", "should be a finite number")


def test_a_non_finite_override(tmp_path):
    result = lmgym("train", CONFIG, *FAST, "--algorithm.is_cap", "inf", "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, "command line", "algorithm.is_cap = inf", "should be a finite number")


def test_a_utf16_config_file(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[trainer]\nlr = 1e-4\n", encoding="utf-16")
    assert_one_error(lmgym("train", str(config)), str(config), "UTF-16", "UTF-8")


def test_a_binary_config_file(tmp_path):
    config = tmp_path / "run.toml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")  # an image saved as .toml
    assert_one_error(lmgym("train", str(config)), f"{config}:1", "not UTF-8", "0x89")


def test_a_config_with_a_utf8_byte_order_mark_loads(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text("[trainer]\nlr = 1e-4\n", encoding="utf-8-sig")
    assert load_config(config).trainer.lr == 1e-4


def test_a_group_size_no_step_can_hold_fails_when_the_config_is_read():
    """Before, it sampled until killed; now reading the config refuses it, naming the product."""
    with pytest.raises(UsageError) as caught:
        load_config(CONFIG, [f"algorithm.group_size={10**7}"])
    flat = " ".join(str(caught.value).split())
    assert "algorithm.group_size" in flat and "16 * 10000000 = 160000000" in flat and "at most 65,536" in flat


# ------------------------------------------------------------------------------ SFT data


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_rows(path: Path, rows: list) -> Path:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


USER = {"role": "user", "content": "123"}
BAD_DATA = {
    "missing": (lambda d: d / "absent.jsonl", ["sft.data", "absent.jsonl", "no such file"]),
    "a directory": (lambda d: d, ["sft.data", "cannot be read"]),
    "csv": (lambda d: write_text(d / "rows.csv", "prompt,completion\nhi,there\n"), ["rows.csv:1", "not valid JSON", "JSON Lines"]),
    "a JSON array": (lambda d: write_rows(d / "rows.json", [[{"messages": [USER]}]]),
                     ["rows.json:1", "one JSON object per line", "list"]),
    "wrong columns": (lambda d: write_rows(d / "rows.jsonl", [{"text": "hi", "label": 1}]),
                      ["rows.jsonl row 0", "`prompt` and `completion`, or `messages`", "text, label"]),
    "messages as a string": (lambda d: write_rows(d / "rows.jsonl", [{"messages": "hello"}]),
                             ["rows.jsonl row 0 `messages`", "list of chat messages", 'str "hello"']),
    "a message without a role": (lambda d: write_rows(d / "rows.jsonl", [{"messages": [{"content": "hi"}, {"role": "assistant", "content": "321"}]}]),
                                 ["rows.jsonl row 0 `messages`", "chat messages like", '{"content":"hi"}']),
    "a completion that is text": (lambda d: write_rows(d / "rows.jsonl", [{"prompt": [USER], "completion": "321"}]),
                                  ["rows.jsonl row 0 `completion`", "list of chat messages", 'str "321"']),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_sft_data(tmp_path, case):
    make, expected = BAD_DATA[case]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data = make(data_dir)
    result = lmgym("sft", CONFIG, *FAST, "--sft.data", str(data), "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, *expected)


# ---------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    result = lmgym("train", CONFIG, *FAST, "--sft.warm_start", "false", "--checkpoint.every", "1", "--logging.output_dir", str(run))
    assert result.exit_code == 0, result.output
    return run


BAD_STATES = {
    "truncated": (lambda state: state.write_bytes(state.read_bytes()[:1000]), "cannot be read"),
    "another program's": (lambda state: torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, state),
                          "not an lmgym checkpoint (no step, weights, optimizer, scheduler, rng, data)"),
    "not a torch file": (lambda state: state.write_text("hello"), "cannot be read"),
    "another model's": (lambda state: torch.save({**torch.load(state, weights_only=True), "weights": {"lm_head.bias": torch.zeros(3)}}, state),
                        "does not fit this run's model"),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_an_unusable_state_pt_on_resume(finished_run, tmp_path, case):
    spoil, expected = BAD_STATES[case]
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = run / "checkpoints" / "step_000001" / "state.pt"
    spoil(state)
    result = lmgym("train", "--resume", str(run), "--trainer.max_steps", "2")
    assert_one_error(result, str(state), expected)
