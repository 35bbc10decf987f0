"""Where a run writes when the user names no directory: runs/KIND/ENV--MODEL--TIME."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path


def new_run_dir(kind: str, env: str, model: str) -> Path:
    safe_model = re.sub(r"[^A-Za-z0-9._-]+", "_", model)
    return Path("runs") / kind / f"{env}--{safe_model}--{datetime.now():%Y%m%d-%H%M%S}"
