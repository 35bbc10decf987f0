"""Finding environments: installed entry points and local environments/ folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmgym import SingleTurnEnv, errors, load_environment
from lmgym.registry import available_environments, describe, require_environment


def test_bundled_environments_are_found_with_descriptions():
    found = available_environments()
    assert {"arithmetic", "reverse-text", "word-problems"} <= set(found)
    assert describe(found["arithmetic"]).startswith("Procedural integer arithmetic")


def test_installed_environment_comes_from_its_entry_point():
    # `make setup` pip-installs each bundled environment, registering an entry point
    assert available_environments()["arithmetic"].source.startswith("entry point arithmetic:")


def local_environment(root: Path, name: str, build_first: str = "") -> Path:
    """environments/NAME/NAME.py under `root`: a SingleTurnEnv of `size` questions, built
    after the `build_first` line (inside load_environment) has run."""
    folder = root / "environments" / name
    folder.mkdir(parents=True)
    (folder / f"{name}.py").write_text(
        '"""My own environment."""\n'
        "from pathlib import Path\n"
        "from lmgym import SingleTurnEnv\n"
        "def load_environment(size: int = 2):\n"
        f"    {build_first or 'pass'}\n"
        "    return SingleTurnEnv(eval_dataset=[{'question': str(i)} for i in range(size)])\n"
    )
    return folder


def test_local_folder_is_found_from_the_current_directory(tmp_path, monkeypatch):
    folder = local_environment(tmp_path, "my_env")
    monkeypatch.chdir(tmp_path)
    assert available_environments()["my-env"].source == str(folder)
    env = load_environment("my_env", size=3)  # underscores and dashes are the same name
    assert isinstance(env, SingleTurnEnv) and len(env.eval_dataset) == 3
    with pytest.raises(errors.UsageError, match="it takes: size"):
        load_environment("my-env", sise=3)


def test_unknown_name_lists_known_ones():
    with pytest.raises(errors.EnvironmentNotFoundError, match="known environments: .*arithmetic"):
        load_environment("arithmetik")


def test_local_package_folder_with_data_is_found(tmp_path, monkeypatch):
    package = tmp_path / "environments" / "data-env" / "data_env"
    package.mkdir(parents=True)
    (package / "words.txt").write_text("alpha\nbeta\n")
    (package / "helpers.py").write_text("def words(path):\n    return path.read_text().split()\n")
    (package / "__init__.py").write_text(
        '"""An environment shipping a data file."""\n'
        "from pathlib import Path\n"
        "from lmgym import SingleTurnEnv\n"
        "from .helpers import words\n"
        "def load_environment():\n"
        "    rows = [{'question': w} for w in words(Path(__file__).with_name('words.txt'))]\n"
        "    return SingleTurnEnv(eval_dataset=rows)\n"
    )
    monkeypatch.chdir(tmp_path)
    assert describe(available_environments()["data-env"]) == "An environment shipping a data file."
    env = load_environment("data-env")
    assert [e.prompt[-1]["content"] for e in env.eval_dataset] == ["alpha", "beta"]


@pytest.mark.parametrize("args, message", [
    ({"num_eval_examples": "two"}, "argument 'num_eval_examples' must be int, got 'two'"),
    ({"operators": 3}, "argument 'operators' must be str, got 3"),
    ({"min_operands": 1}, "environment 'arithmetic': min_operands must be at least 2, got 1"),
])
def test_argument_of_the_wrong_type_or_value_is_one_line(args, message):
    with pytest.raises(errors.UsageError) as caught:
        load_environment("arithmetic", **args)
    assert message in str(caught.value)


def test_require_environment_makes_load_environments_checks_without_building(tmp_path, monkeypatch):
    local_environment(tmp_path, "counted", build_first="Path('built').touch()")
    monkeypatch.chdir(tmp_path)
    require_environment("counted", {"size": 3})
    require_environment("counted,arithmetic", {"counted": {"size": 3}})
    require_environment("vf:anything", {"whatever": 1})  # checked where verifiers is imported
    assert not (tmp_path / "built").exists()
    for name, args, message in (
        ("no-such-env", {}, "unknown environment 'no-such-env'"),
        ("counted", {"size": "big"}, "argument 'size' must be int, got 'big'"),
        ("counted", {"colour": 1}, "bad arguments {'colour': 1}"),
        ("counted,arithmetic", {"counted": {"size": "big"}}, "argument 'size' must be int"),
        ("counted,arithmetic", {"other": {}}, "'other'] is not one of its environments"),
    ):
        with pytest.raises(errors.LmgymError, match=re.escape(message)):
            require_environment(name, args)
    load_environment("counted")
    assert (tmp_path / "built").exists()
