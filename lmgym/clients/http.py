"""The HTTP library the vLLM clients of `lmgym.train.engines.vllm` send through: the one
the installed OpenAI SDK uses (`httpx2` from openai 3 on, `httpx` before), with its
`MockTransport` for tests. `OpenAIClient`, the hot path of evaluation, sends over its
own small HTTP/1.1 client instead (`lmgym.clients.connections` says why). Also the wait
for a server lmgym starts as a child process (llama.cpp, vLLM) to answer."""

from __future__ import annotations

import subprocess
import time

try:
    import httpx2 as http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as http  # type: ignore[no-redef]

__all__ = ["http", "wait_for_answer"]


def wait_for_answer(url: str, process: subprocess.Popen, timeout: float, *, every: float, probe_timeout: float) -> bool:
    """Whether GET `url` answered 200 within `timeout` seconds, asked every `every` seconds;
    False at once when `process`, the server being waited for, exits first."""
    deadline = time.monotonic() + timeout
    with http.Client(timeout=probe_timeout) as probe:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if probe.get(url).status_code == 200:
                    return True
            except http.TransportError:
                pass
            time.sleep(every)
    return False
