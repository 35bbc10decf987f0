"""Contracts on the code itself, checked by `make test`: lmgym's layers import one way
(pyproject.toml, [tool.importlinter]) and ruff finds nothing ([tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from paths import ROOT

BIN = Path(sys.executable).parent  # lint-imports and ruff come with lmgym's dev extras


def test_layers_import_one_way():
    result = subprocess.run([BIN / "lint-imports", "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_ruff_finds_nothing():
    result = subprocess.run([BIN / "ruff", "check", "lmgym", "tests", "environments", "benchmarks", "conftest.py"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
