"""`lmgym init`: the scaffolded package runs as it is written.

For each kind, in a fresh folder: the package is written, its own test runs (pytest in a
subprocess), then `lmgym eval NAME`, found through the local environments/ folder, runs
against a scripted server that plays the model with the `solve` of the generated test.
One more test scaffolds with the `lmgym init` command, installs with `pip install -e`
(into a private prefix, so the shared venv is untouched) and runs `lmgym eval` from a
folder where only the entry point can find the environment.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import orjson
import pytest
from cli_runner import invoke
from typer.testing import CliRunner

from lmgym import errors
from lmgym.cli import app
from lmgym.scaffold import KINDS, check_name, render, write_package
from lmgym.testing import ScriptedServer

NAMES = {"single-turn": "my-adder", "multi-turn": "guess_game", "tool": "stock-tool"}


def run(*args: str, cwd: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "OPENAI_API_KEY": "sk-test", **env},
    )


def generated_solver(package: Path, module: str):
    """The `solve` reply function of the package's own test (it imports the module)."""
    sys.path.insert(0, str(package))
    try:
        return runpy.run_path(str(package / "tests" / f"test_{module}.py"))["solve"]
    finally:
        sys.path.remove(str(package))
        sys.modules.pop(module, None)


def eval_records(cwd: Path, name: str, base_url: str, run_dir: Path, *python_args: str) -> list[dict]:
    """`lmgym eval NAME` from `cwd` against the scripted server: in this process, or in a
    process started with `python_args` (a launcher that changes what lmgym can find)."""
    args = ["eval", name, "-m", "scripted", "-b", base_url, "-n", "4", "-r", "2", "-o", str(run_dir)]
    if python_args:
        result = run(*python_args, *args, cwd=cwd)
    else:
        result = invoke(*args, cwd=cwd, env={"OPENAI_API_KEY": "sk-test", "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    return [orjson.loads(line) for line in (run_dir / "results.jsonl").read_bytes().splitlines()]


@pytest.mark.parametrize("kind", KINDS)
def test_templates_are_valid_python_and_toml(kind):
    files = render("my-env", kind, "environments/my-env")
    assert sorted(files) == ["README.md", "my_env.py", "pyproject.toml", "tests/test_my_env.py"]
    project = tomllib.loads(files["pyproject.toml"])
    assert project["project"]["entry-points"]["lmgym.environments"] == {"my-env": "my_env:load_environment"}
    assert project["tool"]["setuptools"]["py-modules"] == ["my_env"]
    for path in ("my_env.py", "tests/test_my_env.py"):
        compile(files[path], path, "exec")
        assert 25 <= len(files[path].splitlines()) <= 80
    assert "pip install -e environments/my-env" in files["README.md"] and "ScriptedServer" in files["README.md"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("My-Env", "lower-case letters"),
        ("2fast", "starting with a letter"),
        ("my env", "invalid environment name"),
        ("my--env", "invalid environment name"),
        ("class", "Python keyword"),
        ("arithmetic", "an environment named 'arithmetic' already exists"),
        ("reverse_text", "an environment named 'reverse-text' already exists"),
        ("json", "a Python module named 'json' already exists"),
    ],
)
def test_bad_or_taken_names_are_refused(name, message):
    with pytest.raises(errors.UsageError, match=message):
        check_name(name)


def test_an_existing_directory_is_never_overwritten(tmp_path):
    target = tmp_path / "pkg"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(errors.UsageError, match=f"{target} already exists and is not empty"):
        write_package("fresh-env", "tool", target)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(write_package("fresh-env", "tool", empty)) == 4


def test_cli_refuses_an_existing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["init", "twice"]).exit_code == 0
    result = CliRunner().invoke(app, ["init", "twice"])
    assert result.exit_code == 2
    assert "environments/twice already exists and is not empty" in " ".join(result.output.split())


@pytest.mark.parametrize("kind", KINDS)
def test_scaffold_passes_its_own_test_and_runs_under_lmgym_eval(kind, tmp_path):
    name = NAMES[kind]
    module = name.replace("-", "_")
    package = tmp_path / "environments" / name
    write_package(name, kind, package)

    result = run("-m", "pytest", "-q", "-p", "no:cacheprovider", f"environments/{name}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout

    with ScriptedServer(reply=generated_solver(package, module)) as server:
        records = eval_records(tmp_path, name, server.base_url, tmp_path / "run")
    assert len(records) == 8
    for record in records:
        assert record["error"] is None and record["reward"] == pytest.approx(1.2)
        assert record["metrics"]["correct_answer"] == 1.0 and record["metrics"]["format_reward"] == 1.0
    if kind == "tool":
        assert all(r["metrics"]["calls_stock"] == 2.0 for r in records)
    if kind == "multi-turn":
        assert {r["num_turns"] for r in records} != {1}


def test_scaffold_installs_with_pip_editable(tmp_path):
    name, module = "pip-probe-env", "pip_probe_env"
    result = run("-m", "lmgym", "init", name, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"created environments/{name}/" in result.stdout
    prefix = tmp_path / "prefix"
    result = run(
        "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "--prefix", str(prefix),
        "-e", f"environments/{name}", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    site_packages = sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})
    elsewhere = tmp_path / "elsewhere"  # no environments/ folder here: only the entry point finds it
    elsewhere.mkdir()
    launcher = (  # `lmgym` with the prefix as a site directory, so its .pth and entry points count
        f"import site, sys; site.addsitedir({site_packages!r}); sys.argv[0] = 'lmgym'; "
        "from lmgym.cli import main; main()"
    )
    solve = generated_solver(tmp_path / "environments" / name, module)
    with ScriptedServer(reply=solve) as server:
        records = eval_records(elsewhere, name, server.base_url, elsewhere / "run", "-c", launcher)
    assert len(records) == 8 and all(r["reward"] == pytest.approx(1.2) for r in records)
    listing = run("-c", launcher, "list", cwd=elsewhere).stdout
    assert f"entry point {module}:load_environment" in " ".join(listing.split())
