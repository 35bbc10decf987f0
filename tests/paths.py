"""Where the files tests read live, named once (test files sit at different depths)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CONFIGS = ROOT / "configs"
ENVIRONMENTS = ROOT / "environments"
FIXTURES = TESTS / "fixtures"
ARTIFACTS = TESTS / "artifacts"
