"""`EvalConfig`: the settings of an evaluation run, typed, with the rules for resuming.

A run's config is stored in its metadata.json. `--resume` reloads it; settings that only
change *how* the run talks to the server (concurrency, timeouts, the URL) may be given
again, the others define which rollouts the run holds and must not change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pydantic

from lmgym import errors
from lmgym.embedded import DEFAULT_MODEL


class EvalConfig(pydantic.BaseModel):
    """What `lmgym eval` runs. `pass_metric`/`pass_threshold` None: what the environment
    declares (resolved and stored when the run starts)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    env: str
    model: str = DEFAULT_MODEL
    base_url: Optional[str] = None
    api_key_var: str = "OPENAI_API_KEY"
    num_examples: int = 5
    rollouts_per_example: int = pydantic.Field(3, ge=1)
    concurrency: int = pydantic.Field(32, ge=1)
    env_args: dict[str, Any] = {}
    sampling_args: dict[str, Any] = {}
    seed: Optional[int] = None
    timeout: float = pydantic.Field(120.0, gt=0, allow_inf_nan=False)
    max_retries: int = pydantic.Field(5, ge=0)
    pass_metric: Optional[str] = None
    pass_threshold: Optional[float] = pydantic.Field(None, allow_inf_nan=False)
    price_input: Optional[float] = pydantic.Field(None, ge=0, allow_inf_nan=False)
    price_output: Optional[float] = pydantic.Field(None, ge=0, allow_inf_nan=False)
    split: Optional[str] = None  # "train" when the run samples the training split (lmgym distill's teacher)

    @property
    def embedded(self) -> bool:
        return self.base_url is None and self.model == DEFAULT_MODEL


# Settings a resumed run may change; the others define which rollouts the run holds.
RESUMABLE_OVERRIDES = frozenset({"concurrency", "timeout", "max_retries", "api_key_var", "base_url"})


def build_config(settings: dict[str, Any]) -> EvalConfig:
    """An EvalConfig from settings, each mistake one line naming the setting and value."""
    try:
        return EvalConfig(**settings)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise errors.UsageError(f"invalid evaluation settings: {problems}") from None


def resolve_config(given: dict[str, Any], stored: Optional[dict[str, Any]] = None, run_dir: Optional[Path] = None) -> EvalConfig:
    """The settings given now (None: not given) over a resumed run's stored ones, over
    the defaults; a defining setting that differs from the stored one is refused."""
    given = {k: v for k, v in given.items() if v is not None}
    if stored is None:
        return build_config(given)
    conflicts = {k: v for k, v in given.items() if k not in RESUMABLE_OVERRIDES and stored.get(k) != v}
    if conflicts:
        names = ", ".join(f"{k}={v!r} (run has {stored.get(k)!r})" for k, v in conflicts.items())
        raise errors.UsageError(f"--resume {run_dir}: these settings differ from the run's own: {names}")
    known = {k: v for k, v in stored.items() if k in EvalConfig.model_fields}
    return build_config({**known, **{k: v for k, v in given.items() if k in RESUMABLE_OVERRIDES}})
