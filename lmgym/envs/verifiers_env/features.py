"""What of a verifiers environment lmgym's loop can run: the features it cannot are named at load."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def _overrides(cls: type, base: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(base, name)


def _needs_runtime(fn: Callable[..., Any]) -> bool:
    param = inspect.signature(fn).parameters.get("runtime")
    return param is not None and param.default is inspect.Parameter.empty


def unsupported_features(vf: Any, env: Any, task: Any) -> list[str]:
    """Each feature of this verifiers environment that lmgym's loop cannot honour, named."""
    from verifiers.v1.utils.decorators import discover_decorated

    found = []
    roles = env.config.agent_harnesses()
    if len(roles) != 1:
        found.append(f"{type(env).__name__} declares {len(roles)} agents ({', '.join(roles)}); lmgym plays one")
    for role, harness in roles.items():
        if harness.id not in ("bash", "null"):
            found.append(f"agent {role!r} runs the harness {harness.id!r}; lmgym's loop is the `null` chat harness")
    task_cls = type(task)
    if task_cls.NEEDS_CONTAINER:
        found.append(f"{task_cls.__name__}.NEEDS_CONTAINER (a container runtime)")
    for hook in ("setup", "finalize", "stage_verifier", "runtime_env"):
        if _overrides(task_cls, vf.Task, hook):
            found.append(f"{task_cls.__name__}.{hook} (it works in a runtime)")
    if intercepts := discover_decorated(task, "intercept"):
        found.append(f"@vf.intercept hooks ({', '.join(fn.__name__ for fn in intercepts)})")
    for kind in ("reward", "metric"):
        found += [f"@vf.{kind} {fn.__name__} (it needs a runtime)" for fn in task.hooks(kind) if _needs_runtime(fn)]
    if task.config.judges:
        found.append(f"judges ({', '.join(j.id for j in task.config.judges)})")
    spec = single_agent(env)[1]
    for limit in ("max_input_tokens", "max_output_tokens", "max_total_tokens"):  # lmgym's loop counts turns
        if getattr(spec, limit) is not None:
            found.append(f"the agent's {limit} limit")
    return found


def agent_sampling(spec: Any) -> dict[str, Any] | None:
    """The agent's own sampling values, as the environment's default sampling (a run's
    `-S` still overrides them, as it does any environment's)."""
    if spec.sampling is None:
        return None
    return spec.sampling.model_dump(exclude_unset=True, exclude_none=True) or None


def single_agent(env: Any) -> tuple[str, Any]:
    from verifiers.v1.configs.agent import agent_config_fields

    return next(iter(agent_config_fields(env.config).items()))
