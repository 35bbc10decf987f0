"""The `lmgym` command itself: --version, help that reads right, errors printed as written."""

from __future__ import annotations

import os
import subprocess
import sys

import lmgym


def lmgym_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmgym", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "200"})


def test_version():
    result = lmgym_cli("--version")
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
