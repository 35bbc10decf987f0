"""TOML config files with dotted command-line overrides, validated into any pydantic model.

`lmgym train` (TrainConfig, nested sections) and `lmgym eval` (EvalConfig, flat keys) both
read their settings here, so a mistake reads the same in both: one `UsageError` whose
message names where the value came from (the file, or "command line"), the dotted key and
the value, and says what is allowed (with "did you mean" for a mistyped key).

    config = load(TrainConfig, "configs/reverse-digits.toml", ["--trainer.lr", "1e-4", "eval.every=0"])
    (run_dir / "config.toml").write_text(dump(config))

A config model derives from `ConfigModel` (unknown keys and inf/nan refused). This module
sits just above `lmgym.errors`: it knows no lmgym config, only pydantic models.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from lmgym.errors import UsageError

M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    """A config model or section: a typo'd key is an error, not a silently ignored setting,
    and inf or nan (valid TOML floats) mean nothing to any setting."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# ------------------------------------------------------------------------------ public


def load(model: type[M], path: str | Path | None, overrides: Sequence[str] = ()) -> M:
    """Read a TOML file (None = all defaults), apply dotted overrides, validate into `model`.

    Overrides come as `"--trainer.lr", "1e-5"` pairs or as `"trainer.lr=1e-5"` (a leading
    `--` is optional in both). Values are read as TOML values where they parse (`1e-5`,
    `true`, `[1, 2]`, `{max_value = 20}`, `"quoted"`) and as plain strings otherwise;
    `none` unsets a key whose default is unset.
    """
    data = read_toml(Path(path)) if path is not None else {}
    from_cli = apply_overrides(data, overrides, model)
    return validate(model, data, source=str(path) if path is not None else None, from_cli=from_cli)


def dump(config: BaseModel) -> str:
    """The config as TOML, unset (None) values left out; `load` reads it back equal."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML file as plain data; a missing, unreadable, non-UTF-8 or malformed file is
    one UsageError naming the path (and the line, where there is one)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"config path is a directory, not a TOML file: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    text = _decode_toml(path, raw)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column (\d+)\)", message)
        if found:
            line, column = found.groups()
            reason = message[: found.start()].strip()
            raise UsageError(f"{path}:{line}: invalid TOML at line {line}, column {column}: {reason}") from None
        raise UsageError(f"{path}: invalid TOML: {message}") from None


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """`["--a.b", "1", "c.d=x"]` -> `[("a.b", "1"), ("c.d", "x")]`, raw value text."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        body = arg.removeprefix("--")
        if "=" in body:
            key, text = body.split("=", 1)
            i += 1
        elif arg.startswith("--"):
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise UsageError(f"override {arg} has no value: write `{arg} VALUE` or `{body}=VALUE`")
            key, text = body, args[i + 1]
            i += 2
        else:
            raise UsageError(f"override {arg!r} is not `key=VALUE` or `--key VALUE` (a nested key: section.key)")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UsageError(f"override {arg!r}: bad key {key!r}; write it like section.key")
        pairs.append((key, text))
    return pairs


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], model: type[BaseModel]) -> set[str]:
    """Set each dotted override in `data` (in place), its value read for `model`'s field;
    returns the dotted keys set, which `validate` names as coming from the command line."""
    keys: set[str] = set()
    for key, text in parse_overrides(overrides):
        _set_dotted(data, key, _parse_value(model, key, text))
        keys.add(key)
    return keys


def validate(
    model: type[M], data: dict[str, Any], source: str | None = None, from_cli: Iterable[str] = ()
) -> M:
    """Validate nested plain data into `model`, or raise one readable UsageError.

    `source` (the file) and `from_cli` (dotted keys set on the command line) only say, in
    messages, where a bad key came from.
    """
    from_cli = frozenset(from_cli)
    unknown = _first_unknown_key(data, model, ())
    if unknown:
        raise UsageError(_where(unknown, source, from_cli) + _unknown_key_message(model, unknown))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    lines = [_error_line(model, err) for err in errors]
    if len(lines) == 1:
        raise UsageError(_where(errors[0]["loc"], source, from_cli) + "bad config: " + lines[0])
    listed = "\n".join(f"  - {_where(err['loc'], None, from_cli)}{line}" for err, line in zip(errors, lines))
    raise UsageError(f"{source + ': ' if source else ''}{len(lines)} config errors:\n{listed}")


# ------------------------------------------------------------------------------ reading


def _decode_toml(path: Path, raw: bytes) -> str:
    """TOML is UTF-8 (a leading byte-order mark is tolerated, as editors on Windows write one)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UsageError(f"{path}: the file is UTF-16; TOML must be UTF-8, so save it again as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UsageError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            f"a config must be a TOML text file"
        ) from None


def _parse_value(model: type[BaseModel], key: str, text: str) -> Any:
    """TOML value if `text` parses as one, else the text itself; str fields always get text."""
    field = _field_at(model, key.split("."))
    if field is not None and _allows_none(field.annotation) and text.strip().lower() in ("none", "null"):
        return None
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
    if field is not None and _is_plain_str(field.annotation) and not isinstance(value, str):
        return text  # model.name=123 means the string "123"
    return value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parents[: depth + 1])
            raise UsageError(f"override {key}: {prefix} is a value ({child!r}), not a section")
        node = child
    node[last] = value


# ------------------------------------------------------------------------------ the model's shape


def _field_at(model: type[BaseModel], path: Sequence[str]) -> FieldInfo | None:
    """The pydantic field a dotted path names, or None (unknown, or inside a free-form dict)."""
    current: type[BaseModel] | None = model
    field = None
    for part in path:
        if current is None or part not in current.model_fields:
            return None
        field = current.model_fields[part]
        current = _model_of(field.annotation)
    return field


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _allows_none(annotation: Any) -> bool:
    return _is_union(annotation) and type(None) in typing.get_args(annotation)


def _is_plain_str(annotation: Any) -> bool:
    if _is_union(annotation):
        return set(typing.get_args(annotation)) <= {str, type(None)}
    return annotation is str


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _first_unknown_key(data: Any, model: type[BaseModel], prefix: tuple[str, ...]) -> tuple[str, ...] | None:
    if not isinstance(data, dict):
        return None  # not a table: pydantic reports the type error
    for key, value in data.items():
        if key not in model.model_fields:
            return (*prefix, key)
        sub = _model_of(model.model_fields[key].annotation)
        if sub is not None:
            found = _first_unknown_key(value, sub, (*prefix, key))
            if found:
                return found
    return None


def _section_model(model: type[BaseModel], path: Sequence[str]) -> type[BaseModel] | None:
    if not path:
        return model
    field = _field_at(model, path)
    return _model_of(field.annotation) if field is not None else None


# ------------------------------------------------------------------------------ messages


def _unknown_key_message(model: type[BaseModel], path: Sequence[str]) -> str:
    *section, name = path
    section_model = _section_model(model, section)
    allowed = list(section_model.model_fields) if section_model is not None else []
    where = f"[{'.'.join(section)}]" if section else "the top-level table"
    message = f"unknown key {'.'.join(path)!r}"
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.5) or difflib.get_close_matches(
        name.lower().replace("-", "_"), allowed, n=1, cutoff=0.5
    )
    if close:
        message += f"; did you mean {'.'.join([*section, close[0]])!r}?"
    return f"{message} (allowed keys in {where}: {', '.join(allowed)})"


def _where(loc: Sequence[Any], source: str | None, from_cli: frozenset[str]) -> str:
    """Message prefix: "command line: " for keys set there, else "FILE: " (or nothing)."""
    key = ".".join(str(part) for part in loc)
    if key and any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in from_cli):
        return "command line: "
    return f"{source}: " if source else ""


def _error_line(model: type[BaseModel], err: Any) -> str:
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc)
    kind = err["type"]
    value = err.get("input")
    shown = f"{key} = {_show(value)}" if key else ""
    if kind == "extra_forbidden":
        return _unknown_key_message(model, loc)
    if kind == "missing":
        return f"{key} is required and not set"
    if kind == "literal_error":
        field = _field_at(model, loc)
        options = typing.get_args(field.annotation) if field is not None else ()
        allowed = ", ".join(_show(o) for o in options) if options else err.get("ctx", {}).get("expected", "?")
        return f"{shown}: not one of the allowed values: {allowed}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{shown}: must be a table, e.g. [{key}] with key = value lines"
    message = err["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    else:
        message = message[:1].lower() + message[1:]
    return f"{shown}: {message}" if shown else message


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, BaseModel):
        return value.__class__.__name__
    return repr(value)
