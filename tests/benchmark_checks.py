"""What the tests of the bundled standard benchmarks (gsm8k, math500, aime24, aime25,
gpqa-diamond, mmlu-pro, mbpp; environments/NAME/tests) share: each loads the small fixture
written for lmgym in the benchmark's own schema (environments/NAME/tests/data/NAME.*),
never the hub, and scores replies through its rubric."""

from __future__ import annotations

from bundled_checks import score
from paths import ENVIRONMENTS

import lmgym
from lmgym.envs.benchmarks.hub import DATA_DIR_VAR

BENCHMARKS = ("gsm8k", "math500", "aime24", "aime25", "gpqa-diamond", "mmlu-pro", "mbpp")


def fixture(name: str):
    """The fixture file of benchmark `name`."""
    (path,) = (ENVIRONMENTS / name.replace("-", "_") / "tests" / "data").glob(f"{name}.*")
    return path


def load_fixture(name: str, **args):
    """The environment on its fixture, given as the `data_path` argument."""
    return lmgym.load_environment(name, data_path=str(fixture(name)), **args)


def check_loads_its_fixture_both_ways(name: str, monkeypatch, rows: int):
    """The fixture by `data_path`, and by LMGYM_BENCHMARK_DATA naming its folder, give the
    same examples, one per row, in the evaluation split only; returns the environment."""
    by_argument = load_fixture(name)
    monkeypatch.setenv(DATA_DIR_VAR, str(fixture(name).parent))
    by_folder = lmgym.load_environment(name)
    assert by_argument.dataset is None and len(by_argument.eval_dataset) == rows
    assert [(e.prompt, e.answer) for e in by_folder.eval_dataset] == [(e.prompt, e.answer) for e in by_argument.eval_dataset]
    return by_argument


async def rewards(env, replies: list[str | None], example_index: int = 0) -> list[float]:
    """The reward of each reply to one example."""
    example = env.eval_dataset[example_index]
    return [(await score(env, example, reply)).reward for reply in replies]
