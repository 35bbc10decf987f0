"""What a model name means, decided without importing torch (the `lmgym eval` CLI asks
before it knows whether it will need it).

`tiny-llama` and `smollm2` are the CPU training models (`lmgym.train.models`); an
`org/name` string is a Hugging Face hub id; anything else is a directory or unknown.
"""

from __future__ import annotations

import re
from pathlib import Path

MODEL_NAMES = ("tiny-llama", "smollm2")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")  # org/name; a path with more parts is a directory


def is_hub_id(name: str) -> bool:
    """`org/name`: what the hub calls a repository."""
    return bool(HUB_ID.match(name)) and not name.startswith(".")


def runs_in_process(model: str, base_url: str | None) -> bool:
    """Whether `lmgym eval --model MODEL` with no --base-url means a model to run here rather
    than one behind OpenAI's API: a local folder, an `org/name` hub id, or a training model."""
    if base_url is not None:
        return False
    return model in MODEL_NAMES or Path(model).expanduser().is_dir() or is_hub_id(model)
