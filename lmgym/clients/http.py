"""The HTTP library the vLLM clients of `lmgym.train.engines.vllm` send through: the one
the installed OpenAI SDK uses (`httpx2` from openai 3 on, `httpx` before), with its
`MockTransport` for tests. `OpenAIClient`, the hot path of evaluation, sends over its
own small HTTP/1.1 client instead (`lmgym.clients.connections` says why)."""

try:
    import httpx2 as http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as http  # type: ignore[no-redef]

__all__ = ["http"]
