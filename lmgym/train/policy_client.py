"""A model run in this process as a `ModelClient`, so `lmgym eval` can evaluate what was
trained (`--model RUN_DIR/final`), a hub model, or a training run's starting point
(`tiny-llama`, `smollm2`) without a server.

It is the training engine's own client (`LocalClient` on a `Sampler`): prompts are rendered
with the model's chat template and tool calls read in the template's format exactly as in
training, so a held-out score from `lmgym eval` and one from training's `[eval]` agree.
A folder holding a LoRA adapter (`adapter_config.json`) is loaded onto its base and merged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from lmgym.errors import UsageError
from lmgym.parsers.tool_calls import ToolFormat
from lmgym.train.chat_templates import resolve_tool_format
from lmgym.train.engines.local import LocalClient, LocalEngine
from lmgym.train.models import load_model
from lmgym.train.template_check import tool_support_problems

ADAPTER_CONFIG = "adapter_config.json"
DEFAULT_MAX_TOKENS = 256  # when neither the environment nor --sampling-args sets max_tokens


@dataclass
class PolicyClient:
    """The loaded model and the client that samples from it."""

    client: LocalClient
    device: torch.device
    parameters: int
    tool_format: ToolFormat | None


def load_policy(name: str) -> tuple[Any, Any]:
    """`(model, tokenizer)` for `name`; a LoRA adapter folder comes back merged into its base."""
    path = Path(name).expanduser()
    if not (path / ADAPTER_CONFIG).is_file():
        return load_model(name)
    from peft import PeftModel

    try:
        base = json.loads((path / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (ValueError, KeyError) as exc:
        raise UsageError(f"{path / ADAPTER_CONFIG}: cannot read the adapter's base_model_name_or_path ({exc})") from exc
    model, tokenizer = load_model(base)
    merged = PeftModel.from_pretrained(model, path).merge_and_unload()
    return merged.eval(), tokenizer


def open_policy_client(
    name: str, *, device: torch.device, offers_tools: bool, seed: int = 0, max_tokens: int = DEFAULT_MAX_TOKENS
) -> PolicyClient:
    """Load `name` onto `device` and wrap it in the in-process engine's client. A tool
    environment on a template that cannot show tools or read calls is refused, as in training."""
    transformers.utils.logging.disable_progress_bar()  # a bar per load says nothing here
    model, tokenizer = load_policy(name)
    tool_format = resolve_tool_format(tokenizer, "auto")
    if offers_tools:
        problems = tool_support_problems(tokenizer, tool_format)
        if problems:
            raise UsageError(
                f"model {name!r} cannot be evaluated in-process on a tool environment: {'; '.join(problems)}. "
                "Serve it with a server that handles tool calls and pass --base-url"
            )
    engine = LocalEngine(model.to(device), tokenizer, seed=seed, tool_format=tool_format if offers_tools else None)
    engine.client.default_max_tokens = max_tokens
    parameters = sum(p.numel() for p in model.parameters())
    return PolicyClient(engine.client, device, parameters, engine.tool_format)
