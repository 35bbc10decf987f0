"""lmgym.envs.benchmarks.hub: a benchmark's rows from a local copy (JSON Lines, JSON,
Parquet, CSV), from the folder LMGYM_BENCHMARK_DATA names, or from the pinned file in the
Hugging Face cache; offline without any of them, one message per benchmark naming the
dataset, its revision and how to point at a local copy. Nothing here reaches the hub."""

import json
import subprocess
import sys

import pyarrow
import pyarrow.parquet
import pytest
from benchmark_checks import BENCHMARKS, fixture
from bundled_checks import module_of
from cli_runner import process_env
from paths import ROOT

from lmgym.envs.benchmarks.hub import DATA_DIR_VAR, HubFile, load_rows, read_rows
from lmgym.errors import DatasetError

ROWS = [{"question": "1 + 1?", "answer": "2"}, {"question": "2 + 3?", "answer": "5"}]
SOURCE = HubFile("toy", "lmgym-test/toy", "a" * 40, "data/test.parquet", "test", columns=("question", "answer"))


def write(path, rows=ROWS):
    """`rows` in the format the suffix of `path` names."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".parquet":
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    else:
        path.write_text("question,answer\n" + "".join(f"{r['question']},{r['answer']}\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_each_format_reads_the_same_rows(tmp_path, suffix):
    assert read_rows(write(tmp_path / f"rows{suffix}")) == ROWS


@pytest.mark.parametrize("name, content, message", [
    ("rows.jsonl", '{"question": "q", "answer": "a"}\n\n{"question": \n', r"rows.jsonl: line 3: not JSON"),
    ("rows.jsonl", "[1, 2]\n", r"line 1: expected an object, got list"),
    ("rows.json", '{"question": "q"}', r"expected a list of objects"),
    ("rows.parquet", "not parquet", r"rows.parquet: not a Parquet file"),
    ("rows.txt", "q,a", r"cannot read a .txt file; use one of .jsonl, .json, .parquet, .csv"),
])
def test_an_unreadable_copy_is_one_error_naming_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DatasetError, match=message):
        read_rows(tmp_path / name)
    with pytest.raises(DatasetError, match="no such file"):
        read_rows(tmp_path / "missing.jsonl")


def test_a_copy_without_a_column_the_benchmark_reads_is_refused_naming_the_row(tmp_path):
    path = write(tmp_path / "toy.jsonl", [ROWS[0], {"question": "3 + 4?"}])
    with pytest.raises(DatasetError, match=r"toy.jsonl: row 2 has no column 'answer' \(a copy of lmgym-test/toy has question, answer\)"):
        load_rows(SOURCE, str(path))
    with pytest.raises(DatasetError, match="no rows"):
        load_rows(SOURCE, str(write(tmp_path / "empty.jsonl", [])))


def test_data_path_first_then_the_folder_lmgym_benchmark_data_names(tmp_path, monkeypatch):
    folder = tmp_path / "copies"
    folder.mkdir()
    write(folder / "toy.csv")
    monkeypatch.setenv(DATA_DIR_VAR, str(folder))
    assert load_rows(SOURCE) == ROWS  # NAME.csv in the folder
    other = write(tmp_path / "other.jsonl", ROWS[:1])
    assert load_rows(SOURCE, str(other)) == ROWS[:1]  # the argument wins
    (folder / "toy.csv").unlink()
    with pytest.raises(DatasetError, match=rf"{DATA_DIR_VAR}={folder} holds no copy of toy: expected toy.jsonl"):
        load_rows(SOURCE)


OFFLINE_SCRIPT = """
import sys
from lmgym.errors import DatasetError
from lmgym.registry import load_environment
for name in sys.argv[1:]:
    try:
        print(name, "loaded", len(load_environment(name).eval_dataset))
    except DatasetError as exc:
        print(name, "error", " ".join(str(exc).split()))
"""


def test_offline_each_benchmark_reads_the_hub_cache_or_says_how_to_point_at_a_copy(tmp_path):
    """A real process, offline (HF_HUB_OFFLINE read on import) with an empty cache but for
    gsm8k's pinned file, which is read from it; every other benchmark fails with one message."""
    gsm8k = tmp_path / "hf" / "hub" / "datasets--openai--gsm8k" / "snapshots" / "740312add88f781978c0658806c59bc2815b9866" / "main"
    gsm8k.mkdir(parents=True)
    rows = read_rows(fixture("gsm8k"))
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), gsm8k / "test-00000-of-00001.parquet")
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    environ = {k: v for k, v in process_env(**env).items() if k != DATA_DIR_VAR}
    result = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, *BENCHMARKS], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines.pop("gsm8k") == f"loaded {len(rows)}"
    assert set(lines) == set(BENCHMARKS) - {"gsm8k"}
    for name, line in lines.items():
        source = module_of(name).SOURCE
        assert line.startswith(f"error {name}: cannot read {source.path} of the Hugging Face dataset {source.repo}"), line
        for part in (f"at revision {source.revision}", f"hf download {source.repo} {source.path} --repo-type dataset "
                     f"--revision {source.revision}", "data_path", DATA_DIR_VAR, "HF_HOME"):
            assert part in line, (part, line)
        assert ("gated" in line and "HF_TOKEN" in line) == (name == "gpqa-diamond"), line
