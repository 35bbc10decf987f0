"""The `lmgym` command run in this process, for tests of its messages and exit codes
(a subprocess costs a second or more of start-up; these need none)."""

from __future__ import annotations

from typer.testing import CliRunner

from lmgym.cli import app


def invoke(*args: str, env: dict[str, str] | None = None):
    """Run `lmgym ARGS`; the result's `flat` is its output with rich's line wrapping undone."""
    result = CliRunner().invoke(app, list(args), env=env)
    result.flat = " ".join(result.output.split())
    return result


def assert_one_error(result, *expected: str) -> None:
    """Exit 2, no exception escaped, and each expected text in the one message (rich may wrap it)."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output and result.output.count("error:") == 1, result.output
    flat = "".join(result.output.split())
    for text in expected:
        assert "".join(text.split()) in flat, (text, result.output)
