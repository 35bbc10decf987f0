"""The `lmgym` command itself: --version, help that reads right, errors printed as written."""

from __future__ import annotations

from cli_runner import invoke, run_process

import lmgym


def lmgym_cli(*args: str):
    """`lmgym ARGS` in this process, 200 columns wide."""
    return invoke(*args, env={"COLUMNS": "200"})


def test_version():
    """The smoke test of `lmgym` itself as its own process."""
    result = run_process("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"lmgym {lmgym.__version__}"


def test_flags_are_listed_without_a_value_type():
    result = lmgym_cli("eval", "--help")
    assert result.returncode == 0
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ --")}
    assert "<bool>" not in lines["--help"] and "<bool>" not in lines["--audit"]
    assert "<int>" in lines["--num-examples"]


def test_brackets_in_an_error_are_printed_not_read_as_markup():
    result = lmgym_cli("eval", "arithmetic", "-a", '{"[sft]": 1}')
    assert result.returncode == 2
    assert "{'[sft]': 1}" in result.stderr
