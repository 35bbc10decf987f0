"""The HTTP library lmgym's clients send through: the one the installed OpenAI SDK uses
(`httpx2` from openai 3 on, `httpx` before). One library means one set of exceptions to
translate and one `MockTransport` for tests, whichever client sends."""

try:
    import httpx2 as http
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx as http  # type: ignore[no-redef]

__all__ = ["http"]
