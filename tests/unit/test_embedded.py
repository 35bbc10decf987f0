"""The embedded server's command line (no server is started here: tests/e2e/test_embedded_model.py runs it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmgym.embedded import THREADS_VARIABLE, EmbeddedServer, thread_flags
from lmgym.errors import EmbeddedModelError


def test_threads_are_llama_cpps_defaults_unless_the_variable_sets_them():
    assert thread_flags({}) == [] and thread_flags({THREADS_VARIABLE: " "}) == []
    assert thread_flags({THREADS_VARIABLE: "3"}) == ["--n_threads", "3", "--n_threads_batch", "3"]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_count_names_the_variable_and_its_value(value):
    with pytest.raises(EmbeddedModelError, match=rf"{THREADS_VARIABLE} must be a whole number.*got '{value}'"):
        thread_flags({THREADS_VARIABLE: value})


def test_the_server_command_carries_the_thread_count(monkeypatch):
    server = EmbeddedServer(chat_format="chatml-function-calling")
    server.port = 8123
    monkeypatch.setenv(THREADS_VARIABLE, "2")
    command = server.command(Path("model.gguf"))
    assert command[command.index("--n_threads") + 1] == command[command.index("--n_threads_batch") + 1] == "2"
    assert command[command.index("--port") + 1] == "8123" and command[command.index("--chat_format") + 1] == "chatml-function-calling"
    monkeypatch.delenv(THREADS_VARIABLE)
    assert "--n_threads" not in server.command(Path("model.gguf"))
