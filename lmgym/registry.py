"""Find environments by name: installed entry points first, then local folders.

An environment is a module exposing `load_environment(**args) -> Environment`. It is
found through the entry-point group `lmgym.environments` (so `pip install my-env`
registers it), or as a folder `environments/NAME/` holding `NAME.py` or a package
`NAME/__init__.py` (dashes in the name become underscores), looked up in the current directory and in the bundled
`environments/` next to the lmgym package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pydantic

from lmgym import errors

ENTRY_POINT_GROUP = "lmgym.environments"
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "environments"


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    source: str  # "entry point" or the folder it was found in
    load: Callable[[], Callable[..., Any]]  # returns load_environment, importing lazily


def search_dirs() -> list[Path]:
    dirs = [Path.cwd() / "environments", BUNDLED_DIR]
    return list(dict.fromkeys(d for d in dirs if d.is_dir()))


def _module_file(folder: Path) -> Path | None:
    """`NAME.py`, or the package `NAME/__init__.py` (an environment that ships data files)."""
    module = folder.name.replace("-", "_")
    for candidate in (folder / f"{module}.py", folder / module / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _load_from_file(path: Path) -> Callable[..., Any]:
    is_package = path.name == "__init__.py"
    module_name = f"lmgym_env_{path.parent.name if is_package else path.stem}"
    if module_name not in sys.modules:
        locations = [str(path.parent)] if is_package else None
        spec = importlib.util.spec_from_file_location(module_name, path, submodule_search_locations=locations)
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    module = sys.modules[module_name]
    if not hasattr(module, "load_environment"):
        raise errors.UsageError(f"{path} defines no load_environment() function")
    return module.load_environment


def available_environments() -> dict[str, EnvironmentSpec]:
    """Every environment lmgym can find, by canonical name (dashes, lower case)."""
    found: dict[str, EnvironmentSpec] = {}
    for directory in reversed(search_dirs()):  # the current directory wins
        for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
            if path := _module_file(folder):
                name = folder.name.replace("_", "-").lower()
                found[name] = EnvironmentSpec(name, str(folder), lambda p=path: _load_from_file(p))
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        name = entry.name.replace("_", "-").lower()
        found[name] = EnvironmentSpec(name, f"entry point {entry.value}", entry.load)
    return dict(sorted(found.items()))


def describe(spec: EnvironmentSpec) -> str:
    """The first line of the environment's module docstring, for `lmgym list`."""
    func = spec.load()
    module = inspect.getmodule(func)
    doc = (module.__doc__ if module else None) or func.__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def load_environment(name: str, **args: Any):
    """Build the environment `name` with `args` passed to its `load_environment`.

    Several names joined by commas (`"wordle,calculator"`) build an `EnvGroup`; `args`
    then holds one object of arguments per environment: `{"wordle": {"max_turns": 4}}`.
    `vf:NAME` is a `verifiers` environment (lmgym.envs.verifiers_env)."""
    if "," in name:
        return load_group([part.strip() for part in name.split(",")], args)
    if name.startswith("vf:"):  # a verifiers taskset, as `vf-eval NAME` names it
        from lmgym.envs.verifiers_env import load_verifiers_environment

        return load_verifiers_environment(name.removeprefix("vf:"), **args)
    factory = checked_factory(name, args)
    try:
        return factory(**args)
    except ValueError as exc:  # how load_environment functions refuse a value (`min_operands must be ...`)
        raise errors.EnvironmentArgumentError(f"environment {name!r}: {exc}") from None


def require_environment(name: str, args: dict[str, Any]) -> None:
    """What `load_environment` checks before it builds anything (the name, each argument's
    name and type), without building: `lmgym train --nproc N` refuses a typo in one line
    before it starts N processes. A `vf:` name is checked where verifiers is imported."""
    if "," in name:
        for key in group_keys([part.strip() for part in name.split(",")], args):
            require_environment(key, args.get(key, {}))
    elif not name.startswith("vf:"):
        checked_factory(name, args)


def checked_factory(name: str, args: dict[str, Any]) -> Callable[..., Any]:
    """The `load_environment` function of environment `name`, once `args` fit it."""
    known = available_environments()
    key = name.replace("_", "-").lower()
    if key not in known:
        listing = ", ".join(known) or "none"
        raise errors.EnvironmentNotFoundError(f"unknown environment {name!r}; known environments: {listing}")
    factory = known[key].load()
    try:
        inspect.signature(factory).bind(**args)
    except TypeError as exc:
        params = ", ".join(inspect.signature(factory).parameters) or "none"
        raise errors.UsageError(f"environment {name!r}: bad arguments {args}: {exc}; it takes: {params}") from None
    check_argument_types(name, factory, args)
    return factory


def check_argument_types(name: str, factory: Any, args: dict[str, Any]) -> None:
    """Each argument against its annotation, so `{"num_eval_examples": "two"}` is one line
    naming the argument, the expected type and the value, not a traceback from inside."""
    try:
        hints = typing.get_type_hints(factory)
    except Exception:  # annotations that cannot be resolved: nothing to check against
        return
    for arg, value in args.items():
        if arg not in hints:
            continue
        try:
            pydantic.TypeAdapter(hints[arg]).validate_python(value)
        except pydantic.ValidationError:
            raise errors.EnvironmentArgumentError(
                f"environment {name!r}: argument {arg!r} must be {_type_name(hints[arg])}, got {value!r}"
            ) from None
        except pydantic.PydanticSchemaGenerationError:
            continue


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def load_group(names: list[str], args: dict[str, Any]):
    """An EnvGroup of the named environments, each built with its own arguments."""
    from lmgym.envs.group import EnvGroup

    keys = group_keys(names, args)
    return EnvGroup({key: load_environment(key, **args.get(key, {})) for key in keys})


def group_keys(names: list[str], args: dict[str, Any]) -> list[str]:
    """The group's canonical names, once they are distinct and `args` holds one object per name."""
    keys = [n.replace("_", "-").lower() for n in names]
    if not all(keys) or len(set(keys)) != len(keys):
        raise errors.UsageError(f"environment group {','.join(names)!r}: names must be non-empty and distinct")
    stray = sorted(set(args) - set(keys))
    if stray:
        raise errors.UsageError(
            f"environment group {','.join(keys)!r}: arguments are given per environment, "
            f'e.g. {{"{keys[0]}": {{...}}}}; {stray} is not one of its environments'
        )
    not_objects = [k for k, v in args.items() if not isinstance(v, dict)]
    if not_objects:
        raise errors.UsageError(f"environment group: the arguments of {not_objects} must be JSON objects")
    return keys
