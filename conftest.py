"""Fixtures the test files share (tests/ and each bundled environment's environments/NAME/tests),
and how the suite runs on two workers (pytest-xdist).

Helpers that are plain functions live in modules a test imports: `cli_runner` (the
`lmgym` command in this process or as a process), `scripted` (scripted replies and one
rollout against a scripted server), `paths`, `train_setups` and the others in tests/. What is here is what needs pytest: fixtures, and the
hooks that keep the suite correct and short when its tests run in parallel.
"""

from __future__ import annotations

import fcntl
import json
import os
from types import SimpleNamespace

# Each xdist worker is one of two processes on two cores: a worker's torch (and each
# process a test starts, which inherits this) uses one thread rather than fighting the
# other worker for both cores. Set before anything imports torch (lmgym.cli may). The
# embedded llama.cpp server gets one thread for the same reason: its threads spin while
# they wait, and beside a busy worker its default two made the llama tests 2.2x slower.
# A worker also starts with COLUMNS=80 and LINES=24 in its environment, which would fix
# the width of lmgym's rich consoles when they are made; without them, as in a plain
# pytest run, each command's console follows the COLUMNS it is given.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("LMGYM_EMBEDDED_THREADS", "1")
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# The helper modules in tests/ assert too: show the values compared when one fails, as in a test file.
pytest.register_assert_rewrite(*(path.stem for path in (Path(__file__).parent / "tests").glob("*.py")))

from cli_runner import ROOT, invoke  # noqa: E402

from lmgym.testing import ScriptedServer  # noqa: E402

# Tests that must not run beside each other take turns: the end-to-end tests of the
# llama.cpp server count the server processes on the machine; the slow ones (vLLM servers,
# SmolLM2) each take gigabytes of memory. A file lock, not xdist_group marks: pytest-xdist
# 3.8 groups by renaming `item._nodeid`, which pytest 9 no longer reads, so the marks did
# nothing and the llama.cpp tests ran on both workers at once and saw each other's servers.
TAKE_TURNS = ("llama", "slow")
# The longest tests start first, so that neither worker is left with one at the end (none
# that takes turns: two of those at once would leave a worker waiting).
LONGEST_FIRST = (
    "test_learning_reverse_digits", "test_the_demo_evaluates_trains_and_evaluates_the_trained_model_better",
    "test_train_then_resume_to_more_steps", "test_sft_saves_a_model",
)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.originalname not in LONGEST_FIRST)  # stable: otherwise as collected


@pytest.fixture(autouse=True)
def take_turns(request, tmp_path_factory):
    """Holds a lock, shared by every worker of this run, for a test marked llama or slow."""
    kinds = [kind for kind in TAKE_TURNS if request.node.get_closest_marker(kind)]
    if not kinds:
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # each xdist worker's base is a folder in it
    with open(shared / f"lmgym-{kinds[0]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def cli():
    """`lmgym ARGS` in this process (cli_runner.invoke): `cli("eval", ..., cwd=..., env=...)`."""
    return invoke


@pytest.fixture(scope="module")
def scripted_server():
    """One scripted model server for a module's tests; set `scripted_server.app.reply` per test."""
    with ScriptedServer() as server:
        yield server


@pytest.fixture
def server_for(scripted_server):
    """The module's scripted server answering with `reply`, its requests and faults cleared."""

    def serve(reply) -> ScriptedServer:
        scripted_server.app.reply = reply
        scripted_server.app.requests.clear()
        scripted_server.app.faults.clear()
        return scripted_server

    return serve


def run_shared_dir(tmp_path_factory) -> Path:
    """A folder this whole pytest run shares: under xdist, the one holding every worker's base."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_run(tmp_path_factory, name: str, make: Callable[[Path], dict]) -> dict:
    """`make(FOLDER)`'s record (JSON), made by whichever xdist worker asks first; the other
    waits on a lock, then reads the record instead of making it again."""
    shared = run_shared_dir(tmp_path_factory)
    record = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            folder = shared / name
            folder.mkdir()
            record.write_text(json.dumps(make(folder)))
    return json.loads(record.read_text())


def train_two_processes(cwd: Path) -> dict:
    result = invoke(
        "train", str(ROOT / "configs" / "reverse-digits.toml"), "--nproc", "2",
        "--env.args", "{num_examples = 50, num_eval_examples = 10}", "--algorithm.prompts_per_step", "2",
        "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8", "--eval.every", "0", "--logging.console_every", "0",
        "--sft.warm_start", "false", "--trainer.max_steps", "2", "--checkpoint.every", "2", cwd=cwd,
    )
    runs = list((cwd / "runs" / "train").iterdir()) if (cwd / "runs" / "train").is_dir() else []
    run_dir = runs[0] if len(runs) == 1 else cwd / "runs" / "train"
    return {"run_dir": str(run_dir), "returncode": result.returncode, "output": result.output}


@pytest.fixture(scope="session")
def two_process_run(tmp_path_factory) -> tuple[Path, SimpleNamespace]:
    """`lmgym train --nproc 2` (torchrun, two CPU ranks on gloo) from a fresh folder, run once
    for the whole pytest run, for the tests that check it (tests/e2e/test_distributed.py,
    tests/unit/train/test_rundir.py): the run directory the launcher claimed under
    runs/train/, and the command's exit code and output."""
    pytest.importorskip("torch")
    ran = once_per_run(tmp_path_factory, "two-process-run", train_two_processes)
    return Path(ran["run_dir"]), SimpleNamespace(returncode=ran["returncode"], output=ran["output"])


@pytest.fixture(scope="session")
def rank_step_runs(tmp_path_factory) -> dict:
    """The exactness tests' batches, their steps in one process, and ONE torchrun of two
    ranks stepping on half of each (tests/rank_steps.py), run once for the whole pytest
    run: the record a test reads its part of with `rank_steps.results` (which fails the
    test with the error that stopped its part)."""
    pytest.importorskip("torch")
    import rank_steps

    return once_per_run(tmp_path_factory, "rank-steps", rank_steps.run_all)


@pytest.fixture
def traces(tmp_path) -> Path:
    """The folder a test's proxy writes its traces to (read them with records.read_traces)."""
    return tmp_path / "traces"
