"""Rollout engines: what samples training's rollouts, behind one `RolloutEngine` interface.

    base.py       `RolloutEngine`: client, publish, snapshot/refresh, RNG state, close
    sampling.py   batched KV-cache sampling from a transformers model (`Sampler`)
    local.py      `LocalEngine` and `LocalClient`: in process, sharing the trainer's weights
    vllm/         `VLLMEngine`: a vLLM server in its own venv, weights published over HTTP

The training loop and the orchestrator see only `RolloutEngine`; which engine a run uses is
`engine.kind` in its config (`lmgym.train.session`). Both clients render prompts and read
replies through `lmgym.train.render` (token-exact later turns, tool calls). Import the
engine modules directly: this package's import brings in neither torch nor vLLM's client.
"""

from lmgym.train.engines.base import RolloutEngine

__all__ = ["RolloutEngine"]
