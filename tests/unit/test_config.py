"""`lmgym.config`: TOML files, dotted overrides and one readable error per mistake, for any
pydantic model (here a small one, not lmgym's own configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import pytest
from pydantic import Field

from lmgym.config import ConfigModel, dump, load, parse_overrides, read_toml, validate
from lmgym.errors import UsageError


class Server(ConfigModel):
    host: str = "localhost"
    port: int = Field(8000, gt=0)
    name: Optional[str] = None


class Limits(ConfigModel):
    rate: float = Field(1.0, gt=0)
    mode: Literal["fast", "safe"] = "safe"
    tags: dict[str, Any] = {}


class App(ConfigModel):
    retries: int = 3
    server: Server = Field(default_factory=Server)
    limits: Limits = Field(default_factory=Limits)


class Named(ConfigModel):
    """A model with a required key and no defaults to fall back on."""

    title: str
    size: int = 1


def write(tmp_path: Path, text: str, name: str = "app.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(model, *args) -> str:
    with pytest.raises(UsageError) as info:
        load(model, *args)
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)  # no chained traceback
    return str(exc)


# ----------------------------------------------------------------------------- loading


def test_no_file_is_the_defaults_and_a_file_keeps_the_other_defaults(tmp_path):
    assert load(App, None) == App()
    app = load(App, write(tmp_path, "retries = 5\n[server]\nport = 9000\n"))
    assert (app.retries, app.server.port, app.server.host, app.limits) == (5, 9000, "localhost", Limits())


def test_overrides_in_both_syntaxes_beat_the_file(tmp_path):
    path = write(tmp_path, '[server]\nport = 9000\nhost = "a"\n[limits]\nrate = 2.5\n')
    app = load(App, path, ["--server.port", "9001", "limits.mode=fast", "--retries=0"])
    assert (app.server.port, app.server.host, app.limits.mode, app.limits.rate, app.retries) == (9001, "a", "fast", 2.5, 0)


def test_override_values_are_toml_where_they_parse_and_text_for_str_fields():
    app = load(App, None, ["server.host=123", "limits.rate=1e-3", "limits.tags={a = [1, 2]}", "limits.tags.b=true"])
    assert app.server.host == "123" and app.limits.rate == 1e-3
    assert app.limits.tags == {"a": [1, 2], "b": True}


def test_none_unsets_an_optional_key(tmp_path):
    path = write(tmp_path, '[server]\nname = "x"\n')
    assert load(App, path, ["server.name=none"]).server.name is None


def test_parse_overrides():
    assert parse_overrides(["--a.b", "1", "c=x=y", "--d=2"]) == [("a.b", "1"), ("c", "x=y"), ("d", "2")]


@pytest.mark.parametrize("bad", [["--retries"], ["--retries", "--server.port", "1"], ["retries"], ["=1"], ["a..b=1"]])
def test_malformed_overrides(bad):
    assert "override" in error_of(App, None, bad)


def test_an_override_below_a_value():
    message = error_of(App, None, ["retries=1", "retries.x=2"])
    assert "retries" in message and "not a section" in message


# ------------------------------------------------------------------------------ files


def test_file_errors_name_the_path_and_line(tmp_path):
    assert "config file not found" in error_of(App, tmp_path / "nope.toml")
    assert "is a directory" in error_of(App, tmp_path)
    bad = write(tmp_path, "retries = 1\n[server]\nport = = 2\n")
    message = error_of(App, bad)
    assert message.startswith(f"{bad}:3:") and "line 3, column" in message


def test_utf16_binary_and_byte_order_mark(tmp_path):
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text("retries = 1\n", encoding="utf-16")
    assert "UTF-16" in error_of(App, utf16) and str(utf16) in error_of(App, utf16)
    binary = tmp_path / "image.toml"
    binary.write_bytes(b"retries = 1\n\x89PNG\x00")
    assert error_of(App, binary).startswith(f"{binary}:2: not UTF-8 text (byte 0x89")
    bom = tmp_path / "bom.toml"
    bom.write_text("retries = 7\n", encoding="utf-8-sig")
    assert read_toml(bom) == {"retries": 7}


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    path = write(tmp_path, f"[limits]\nrate = {value}\n")
    message = error_of(App, path)
    assert message.startswith(f"{path}: ") and f"limits.rate = {value}" in message and "finite number" in message


# ----------------------------------------------------------------------------- messages


def test_a_typo_in_the_file_names_the_file_suggests_and_lists_the_section(tmp_path):
    path = write(tmp_path, "[server]\nprot = 1\n")
    message = error_of(App, path)
    assert message.startswith(f"{path}: unknown key 'server.prot'; did you mean 'server.port'?")
    assert "allowed keys in [server]: host, port, name" in message


def test_a_typo_on_the_command_line_says_so():
    message = error_of(App, None, ["--retires", "2"])
    assert message.startswith("command line: unknown key 'retires'; did you mean 'retries'?")
    assert "the top-level table: retries, server, limits" in message
    assert "did you mean 'retries'" in error_of(App, None, ["--Retries", "2"])  # case and dashes forgiven


def test_a_bad_value_names_where_it_came_from_the_key_and_the_value(tmp_path):
    path = write(tmp_path, '[server]\nport = "eighty"\n')
    message = error_of(App, path)
    assert message.startswith(f'{path}: bad config: server.port = "eighty": ') and "integer" in message
    assert error_of(App, path, ["server.port=0"]).startswith("command line: bad config: server.port = 0: ")


def test_a_literal_lists_its_allowed_values():
    assert 'limits.mode = "slow": not one of the allowed values: "fast", "safe"' in error_of(App, None, ["limits.mode=slow"])


def test_a_section_given_as_a_value(tmp_path):
    assert "server = 3: must be a table" in error_of(App, write(tmp_path, "server = 3\n"))


def test_a_required_key_that_is_not_set(tmp_path):
    path = write(tmp_path, "size = 2\n")
    assert error_of(Named, path) == f"{path}: bad config: title is required and not set"
    assert load(Named, path, ["title=x"]) == Named(title="x", size=2)


def test_several_errors_are_one_message_listing_each():
    message = error_of(App, None, ["server.port=0", "limits.rate=-1"])
    assert message.startswith("2 config errors:")
    assert "command line: server.port = 0" in message and "command line: limits.rate = -1" in message


def test_validate_takes_plain_data_and_says_nothing_of_pydantic():
    assert validate(App, {"retries": 1}) == App(retries=1)
    with pytest.raises(UsageError) as info:
        validate(App, {"limits": {"mode": 1}}, source="x.toml")
    assert str(info.value).startswith("x.toml: bad config: limits.mode = 1") and "pydantic" not in str(info.value)


# -------------------------------------------------------------------------------- dumping


def test_dump_round_trips_and_leaves_unset_values_out(tmp_path):
    app = load(App, None, ["server.port=1", "limits.tags={x = 1}", "limits.mode=fast"])
    text = dump(app)
    assert "name" not in text and "None" not in text
    assert load(App, write(tmp_path, text)) == app
