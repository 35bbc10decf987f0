"""Small training runs for tests: reverse-digits cut down to a few seconds a step, a metrics
sink that keeps what it is given, and `torchrun` for the distributed tests."""

from __future__ import annotations

import subprocess
import sys

from cli_runner import process_env
from paths import CONFIGS

from lmgym.train.config import load_config
from lmgym.train.metrics import MetricsSink

CONFIG = CONFIGS / "reverse-digits.toml"
SMALL = [
    "env.args={num_examples=200, num_eval_examples=50}", "algorithm.prompts_per_step=4", "algorithm.group_size=4",
    "trainer.micro_batch_size=8", "eval.every=0", "logging.console_every=0", "sft.warm_start=false",
]


def small_config(tmp_path, *extra: str):
    """reverse-digits with 16 rollouts a step, no evaluation, writing under `tmp_path`."""
    return load_config(CONFIG, [*SMALL, f"logging.output_dir={tmp_path}", *extra])


class ListSink(MetricsSink):
    """Keeps every (step, metrics) it is given."""

    def __init__(self):
        self.rows: list[tuple[int, dict]] = []

    def log(self, step: int, metrics: dict) -> None:
        self.rows.append((step, dict(metrics)))

    def close(self) -> None:
        pass


def torchrun(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --standalone` (a free port of its own) with `nproc` ranks on this machine."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args],
        capture_output=True, text=True, timeout=timeout, env=process_env(), check=False,
    )
