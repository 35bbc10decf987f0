"""`lmgym eval --config FILE`: settings from TOML, flags and dotted overrides winning over
it, and the same one-line errors as `lmgym train`'s config, run against a scripted server."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from cli_runner import assert_one_error, invoke
from paths import ROOT
from typer.testing import CliRunner

from lmgym.cli import app
from lmgym.testing import ScriptedServer, last_user_text

SHIPPED = ROOT / "configs" / "eval-arithmetic.toml"


def solve(request) -> str:
    """The arithmetic environment's questions with + and - only, answered right."""
    expression = re.search(r"What is (.+)\?", last_user_text(request)).group(1)
    tokens = expression.split()
    total = int(tokens[0])
    for op, value in zip(tokens[1::2], tokens[2::2]):
        total += int(value) if op == "+" else -int(value)
    return f"<answer>{total}</answer>"


@pytest.fixture
def server():
    with ScriptedServer(reply=solve) as s:
        yield s


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def lmgym(*args: str):
    return invoke("eval", *args, env={"COLUMNS": "200"})


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def config_file(tmp_path: Path, server, extra: str = "") -> Path:
    return write(tmp_path / "eval.toml", f"""
env = "arithmetic"
model = "scripted"
base_url = "{server.base_url}"
num_examples = 3
rollouts_per_example = 2
{extra}
[env_args]
max_value = 9
operators = "+-"

[sampling_args]
temperature = 0.3
""")


def records(run_dir: Path) -> list[dict]:
    return [orjson.loads(line) for line in (run_dir / "results.jsonl").read_bytes().splitlines()]


def stored_config(run_dir: Path) -> dict:
    return orjson.loads((run_dir / "metadata.json").read_bytes())["config"]


# ------------------------------------------------------------------------------ settings


def test_a_config_file_runs(server, tmp_path):
    run = tmp_path / "run"
    result = lmgym("--config", str(config_file(tmp_path, server)), "-o", str(run))
    assert result.exit_code == 0, result.output
    assert len(records(run)) == 6 and all(r["metrics"]["correct_answer"] == 1.0 for r in records(run))
    config = stored_config(run)
    assert (config["env"], config["model"], config["num_examples"], config["rollouts_per_example"]) == ("arithmetic", "scripted", 3, 2)
    assert config["env_args"] == {"max_value": 9, "operators": "+-"}
    assert {r["temperature"] for r in server.requests} == {0.3}
    numbers = {int(n) for r in server.requests for n in re.findall(r"\d+", r["messages"][-1]["content"])}
    assert max(numbers) <= 9  # the file's env_args reached the environment


def test_flags_win_over_the_file(server, tmp_path):
    run = tmp_path / "run"
    result = lmgym("--config", str(config_file(tmp_path, server)), "-n", "2", "-r", "1", "-m", "other",
                   "-S", '{"temperature": 0.9}', "-o", str(run))
    assert result.exit_code == 0, result.output
    assert len(records(run)) == 2
    config = stored_config(run)
    assert (config["model"], config["sampling_args"], config["env_args"]["max_value"]) == ("other", {"temperature": 0.9}, 9)
    assert {r["model"] for r in server.requests} == {"other"}


def test_dotted_overrides_win_over_the_file(server, tmp_path):
    run = tmp_path / "run"
    result = lmgym("--config", str(config_file(tmp_path, server)), "--rollouts_per_example", "1",
                   "--sampling_args.temperature", "0.1", "env_args.max_value=5", "-o", str(run))
    assert result.exit_code == 0, result.output
    config = stored_config(run)
    assert config["rollouts_per_example"] == 1 and len(records(run)) == 3
    assert config["sampling_args"] == {"temperature": 0.1} and config["env_args"] == {"max_value": 5, "operators": "+-"}


def test_overrides_without_a_file_may_come_before_the_environment(server, tmp_path):
    run = tmp_path / "run"
    result = lmgym("--env_args.max_value", "4", "env_args.operators=+-", "arithmetic",
                   "-m", "scripted", "-b", server.base_url, "-n", "2", "-r", "1", "-o", str(run))
    assert result.exit_code == 0, result.output
    config = stored_config(run)
    assert config["env"] == "arithmetic" and config["env_args"] == {"max_value": 4, "operators": "+-"}


def test_the_shipped_example_runs(server, tmp_path):
    run = tmp_path / "run"
    result = lmgym("--config", str(SHIPPED), "-m", "scripted", "-b", server.base_url, "-n", "2", "-r", "1", "-o", str(run))
    assert result.exit_code == 0, result.output
    config = stored_config(run)
    assert config["env"] == "arithmetic" and config["env_args"] == {"max_value": 20, "operators": "+-"}
    assert [r["metrics"]["correct_answer"] for r in records(run)] == [1.0, 1.0]


def test_resume_takes_the_same_file_and_refuses_a_changed_one(server, tmp_path):
    run = tmp_path / "run"
    path = config_file(tmp_path, server)
    assert lmgym("--config", str(path), "-n", "1", "-r", "1", "-o", str(run)).exit_code == 0
    result = lmgym("--resume", str(run), "--config", str(path), "-n", "1", "-r", "1", "-c", "4")
    assert result.exit_code == 0, result.output
    result = lmgym("--resume", str(run), "--config", str(path))
    assert_one_error(result, f"--resume {run}", "num_examples=3 (run has 1)", "rollouts_per_example=2 (run has 1)")


def test_help_explains_config():
    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    flat = " ".join(result.output.replace("│", " ").split())  # rich wraps help inside a box
    assert "--config" in flat and "[env_args] and [sampling_args] tables" in flat and "Flags given here win over the file" in flat
    assert "--env_args.max_value 50" in flat


# -------------------------------------------------------------------------------- errors


def test_a_typo_in_the_file_is_named_with_a_suggestion(server, tmp_path):
    path = config_file(tmp_path, server, extra="rollouts_per_exmple = 4")
    result = lmgym("--config", str(path), "-o", str(tmp_path / "run"))
    assert_one_error(result, f"{path}: unknown key 'rollouts_per_exmple'; did you mean 'rollouts_per_example'?",
                     "allowed keys in the top-level table: env, model")
    assert not (tmp_path / "run").exists() and not server.requests


def test_a_typo_on_the_command_line_is_named_with_a_suggestion(server, tmp_path):
    result = lmgym("--config", str(config_file(tmp_path, server)), "--num_exampels", "2")
    assert_one_error(result, "command line: unknown key 'num_exampels'; did you mean 'num_examples'?")


@pytest.mark.parametrize(("line", "shown"), [
    ("concurrency = 0", "concurrency = 0: input should be greater than or equal to 1"),
    ('num_examples = "many"', 'num_examples = "many": input should be a valid integer'),
    ("timeout = inf", "timeout = inf: input should be a finite number"),
    ("env_args = 3", "env_args = 3: must be a table"),
])
def test_a_bad_value_names_the_file_the_key_and_the_value(server, tmp_path, line, shown):
    path = write(tmp_path / "eval.toml", f'env = "arithmetic"\nbase_url = "{server.base_url}"\n{line}\n')
    result = lmgym("--config", str(path), "-o", str(tmp_path / "run"))
    assert_one_error(result, f"{path}: bad config: {shown}")
    assert not (tmp_path / "run").exists() and not server.requests


@pytest.mark.parametrize(("file_lines", "flag", "key"), [
    ("[sampling_args]\ntemperature = nan", None, "temperature"),
    ("[sampling_args]\nlogit_bias = {50256 = -inf}", None, "logit_bias.50256"),
    ("", '{"top_p": Infinity}', "top_p"),
    ("", '{"stop": ["x"], "extra": {"scale": [1, NaN]}}', "extra.scale.1"),
])
def test_a_sampling_argument_that_json_cannot_carry_is_one_line(server, tmp_path, file_lines, flag, key):
    """Sent, nan would reach the server as null (its default) and inf likewise: refused."""
    path = write(tmp_path / "eval.toml", f'env = "arithmetic"\nbase_url = "{server.base_url}"\n{file_lines}\n')
    result = lmgym("--config", str(path), "-o", str(tmp_path / "run"), *(["-S", flag] if flag else []))
    assert_one_error(result, "bad config: sampling_args", f"{key} is not a finite number", "has no inf or nan")
    assert not (tmp_path / "run").exists() and not server.requests


def test_a_bad_flag_value_is_named_as_the_command_lines(server, tmp_path):
    result = lmgym("--config", str(config_file(tmp_path, server)), "-c", "0")
    assert_one_error(result, "command line: bad config: concurrency = 0")


def test_file_errors_are_train_config_errors(tmp_path):
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text('env = "arithmetic"\n', encoding="utf-16")
    assert_one_error(lmgym("--config", str(utf16)), str(utf16), "UTF-16")
    bad = write(tmp_path / "bad.toml", 'env = "arithmetic"\nnum_examples = = 2\n')
    assert_one_error(lmgym("--config", str(bad)), f"{bad}:2: invalid TOML at line 2")
    assert_one_error(lmgym("--config", str(tmp_path / "absent.toml")), "config file not found", "absent.toml")


def test_a_file_without_an_environment(tmp_path):
    path = write(tmp_path / "eval.toml", "num_examples = 2\n")
    assert_one_error(lmgym("--config", str(path)), f"{path}: bad config: env is required and not set")
    assert_one_error(lmgym(), "name an environment", "--config FILE", "--resume RUN_DIR")
