"""Any OpenEnv environment server, evaluated and trained as an lmgym environment.

    lmgym eval openenv -a '{"url": "http://127.0.0.1:8000"}' -m MODEL -b URL

Each rollout is one episode on its own WebSocket session, reset with the example's seed;
the first observation is the prompt and each reply is one action (its text, or a call of
the `act` tool when the action has several fields). The reward is what the server sent,
summed over the episode (`"reward": "last"` for the last one). See lmgym.envs.openenv.
"""

from __future__ import annotations

from typing import Any, Literal

from lmgym.envs import OpenEnvEnv


def load_environment(
    url: str,
    num_examples: int = 100,
    num_eval_examples: int = 20,
    action: Literal["auto", "text", "tool"] = "auto",
    text_field: str | None = None,
    reward: Literal["sum", "last"] = "sum",
    reset_args: dict[str, Any] | None = None,
    system_prompt: str | None = None,
    max_turns: int = 10,
    timeout: float = 30.0,
) -> OpenEnvEnv:
    return OpenEnvEnv(
        url, num_examples=num_examples, num_eval_examples=num_eval_examples, action=action, text_field=text_field,
        reward=reward, reset_args=reset_args, system_prompt=system_prompt, max_turns=max_turns, timeout=timeout,
    )
