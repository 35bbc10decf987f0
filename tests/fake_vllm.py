"""vLLM's HTTP routes answered in this process (an `httpx.MockTransport`), for the vLLM
client's and engine's tests that need no real server."""

from __future__ import annotations

import time

import orjson

from lmgym.clients.http import http as _http


def completion(ids, logprobs=None, finish="stop", text="hi", prompt=None):
    """A vLLM `/v1/completions` reply with `return_token_ids` and `logprobs: 0`."""
    logprobs = [-0.25] * len(ids) if logprobs is None else logprobs
    choice = {
        "index": 0, "text": text, "finish_reason": finish, "token_ids": ids, "prompt_token_ids": prompt,
        "logprobs": {"token_logprobs": logprobs, "tokens": [f"token_id:{i}" for i in ids], "top_logprobs": None},
    }
    return {"object": "text_completion", "model": "base", "choices": [choice]}


class FakeVLLM:
    """Records every request; replies from `reply(path, body)` -> (status, json[, headers])."""

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[tuple[str, dict]] = []
        self.times: list[float] = []

    def __call__(self, request):
        body = orjson.loads(request.content) if request.content else {}
        path = request.url.path + (f"?{request.url.query.decode()}" if request.url.query else "")
        self.calls.append((path, body))
        self.times.append(time.monotonic())
        status, data, *headers = self.reply(path, body)
        content = orjson.dumps(data) if not isinstance(data, str) else data.encode()
        return _http.Response(status, content=content, headers=headers[0] if headers else None)

    @property
    def transport(self):
        return _http.MockTransport(self)
