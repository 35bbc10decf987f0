"""`EvalConfig`: the settings of an evaluation run, typed, with the rules for resuming.

Settings come from a TOML file (`lmgym eval --config eval.toml`: EvalConfig's keys at the
top level, `[env_args]` and `[sampling_args]` tables), then dotted overrides
(`--env_args.max_value 50`), then flags; the file and overrides are read, and mistakes
reported, by `lmgym.config`, as for `lmgym train`.

A run's config is stored in its metadata.json. `--resume` reloads it; settings that only
change *how* the run talks to the server (concurrency, timeouts, the URL) may be given
again, the others define which rollouts the run holds and must not change.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Optional

import pydantic

from lmgym import errors
from lmgym.config import ConfigModel, apply_overrides, read_toml, validate
from lmgym.embedded import DEFAULT_MODEL


class EvalConfig(ConfigModel):
    """What `lmgym eval` runs. `pass_metric`/`pass_threshold` None: what the environment
    declares (resolved and stored when the run starts). Unknown keys and inf/nan are refused."""

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
    timeout: float = pydantic.Field(120.0, gt=0)
    max_retries: int = pydantic.Field(5, ge=0)
    pass_metric: Optional[str] = None
    pass_threshold: Optional[float] = None
    price_input: Optional[float] = pydantic.Field(None, ge=0)
    price_output: Optional[float] = pydantic.Field(None, ge=0)
    device: str = "auto"  # where a model run in this process (no base_url) runs
    split: Optional[str] = None  # "train" when the run samples the training split (lmgym distill's teacher)

    @property
    def embedded(self) -> bool:
        return self.base_url is None and self.model == DEFAULT_MODEL

    @pydantic.field_validator("sampling_args")
    @classmethod
    def _finite_sampling_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        """They go to the server as JSON, which has no inf or nan: sent, nan would become
        null, the server's default, without a word."""
        where = non_finite_at(value)
        if where is not None:
            raise ValueError(f"{where} is not a finite number (the request is JSON, which has no inf or nan)")
        return value


def non_finite_at(value: Any, path: str = "") -> Optional[str]:
    """The dotted path of the first inf or nan in nested plain data, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = non_finite_at(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


# Settings a resumed run may change; the others define which rollouts the run holds.
RESUMABLE_OVERRIDES = frozenset({"concurrency", "timeout", "max_retries", "api_key_var", "base_url", "device"})


def differing_settings(stored: dict[str, Any], now: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """`key=now (run has stored)` for each of `keys` whose value changed: what a resumed or
    continued run must not change, since it defines which rollouts the run holds."""
    return [f"{k}={now.get(k)!r} (run has {stored.get(k)!r})" for k in keys if now.get(k) != stored.get(k)]


def resolve_config(
    flags: dict[str, Any],
    stored: Optional[dict[str, Any]] = None,
    run_dir: Optional[Path] = None,
    *,
    path: Optional[Path] = None,
    overrides: Sequence[str] = (),
) -> EvalConfig:
    """The settings of the TOML file at `path`, under dotted `overrides`, under `flags`
    (None: not given), over a resumed run's `stored` ones, over the defaults; a defining
    setting that differs from the stored one is refused."""
    data = read_toml(path) if path is not None else {}
    from_cli = apply_overrides(data, overrides, EvalConfig)
    given = {k: v for k, v in flags.items() if v is not None}
    data.update(given)
    from_cli |= set(given)
    source = str(path) if path is not None else None
    if stored is None:
        return validate(EvalConfig, data, source, from_cli)
    known = {k: v for k, v in stored.items() if k in EvalConfig.model_fields}
    resumed = validate(EvalConfig, {**known, **data}, source, from_cli)
    conflicts = differing_settings(known, resumed.model_dump(), [k for k in data if k not in RESUMABLE_OVERRIDES])
    if conflicts:
        raise errors.UsageError(f"--resume {run_dir}: these settings differ from the run's own: {', '.join(conflicts)}")
    return resumed
