"""The names in a training run directory (lmgym.train.session draws the whole layout) and
where a new run goes. No torch here: the `lmgym train` launcher and `--resume` checks read
these before any process imports it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lmgym.rundir import claim_run_dir

if TYPE_CHECKING:
    from lmgym.train.config import TrainConfig

CONFIG_FILE = "config.toml"
SFT_MODEL = "sft_model"
SFT_LOG_SIZES = "lmgym_log_sizes.json"  # in sft_model/: the logs' sizes when it was saved
FINAL_MODEL = "final"


def default_run_dir(config: TrainConfig, kind: str) -> Path:
    """`logging.output_dir` when set, else a new runs/KIND/ENV--MODEL--TIME directory."""
    if config.logging.output_dir:
        return Path(config.logging.output_dir)
    return claim_run_dir(kind, config.env.name, Path(config.model.name).name)
