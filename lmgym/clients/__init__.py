"""How rollouts talk to a model, and nothing else.

    base.py       `ModelClient`: the one call environments make (`chat`)
    openai.py     `OpenAIClient`: any OpenAI-compatible chat server over HTTP
    connections.py  the keep-alive HTTP/1.1 connections `OpenAIClient` sends over, one
                  pool per event loop
    retry.py      which failed requests are retried, and after how long (shared with the
                  vLLM rollout client of `lmgym.train.engines.vllm`)
    http.py       the HTTP library the vLLM clients send through (the OpenAI SDK's)
    per_loop.py   one client per event loop, for judges and other second models

Training's clients (in process, vLLM) sample token ids for the trainer and so live with
the engines in `lmgym.train.engines`; this package imports nothing above `lmgym.types`.
"""

from lmgym.clients.base import ModelClient
from lmgym.clients.openai import OpenAIClient

__all__ = ["ModelClient", "OpenAIClient"]
