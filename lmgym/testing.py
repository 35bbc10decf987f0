"""A scripted OpenAI-compatible server on loopback, for testing environments end to end.

The real `openai` SDK talks real HTTP to it and parses real JSON, so a test exercises the
same code as a run against OpenAI or vLLM, but the answers are deterministic: a `reply`
function maps each request to a reply (text, or a message with tool calls and perhaps
`reasoning_content`). A request with `stream: true` gets server-sent events as the real
servers send them (see `stream_chunks`), with a usage chunk when
`stream_options.include_usage` asks for one. Faults can be injected for the next
requests: HTTP errors (500, 503, 429 with Retry-After), stalls longer than the client's
timeout, and malformed JSON bodies.

    with ScriptedServer(reply=lambda request: "<answer>4</answer>") as server:
        client = OpenAIClient(server.base_url)
        server.fail_next(503, times=2)

It is a bare ASGI app served by uvicorn (extra `dev`), in a thread for tests or as its own
process for benchmarks: `python -m lmgym.testing --port 8000 --reply 42` (add
`--tool-call calculate '{"expression": "6 * 7"}'` to call a tool first). `BackgroundServer`
serves any other ASGI app the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Literal

import orjson

from lmgym.messages import last_user_text  # public here: scripted replies key on it

__all__ = ["BackgroundServer", "Fault", "ScriptedApp", "ScriptedServer", "last_user_text", "stream_chunks", "tool_call"]

Reply = str | dict[str, Any]
ReplyFunc = Callable[[dict[str, Any]], Reply]
# How a server cuts a streamed reply: OpenAI sends a tool call's id, type and name in its
# first fragment only and opens a tool-call reply with `"content": null`; llama-cpp-python
# repeats id, type and name in every fragment, and here opens with `"content": ""` (as
# its functionary handler and vLLM do), the opening that once made traces differ.
StreamStyle = Literal["openai", "llama.cpp"]


@dataclass(frozen=True)
class Fault:
    """What to do instead of answering: an HTTP status, a stall, or a malformed body."""

    status: int | None = None
    retry_after: float | None = None
    stall_s: float = 0.0
    malformed: bool = False


def tool_call(name: str, arguments: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    """A tool call in the wire format, for scripted replies."""
    return {
        "id": call_id or f"call_{name}",
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _count_tokens(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Text cut into the word-sized deltas a server streams (joined, they are the text)."""
    return re.findall(r"^\s+|\S+\s*", text)


def _argument_pieces(arguments: str) -> list[str]:
    """Tool-call arguments cut into three fragments (one when too short to cut)."""
    third = -(-len(arguments) // 3) or 1
    return [arguments[i:i + third] for i in range(0, len(arguments), third)] or [""]


def stream_chunks(message: dict[str, Any], style: StreamStyle = "openai") -> list[dict[str, Any]]:
    """The `choices[0]` of each chunk a server streams for an assistant `message`: the role,
    `reasoning_content` and `content` as word deltas, each tool call in fragments cut the
    way `style` does, then the finish reason."""
    calls = message.get("tool_calls") or []
    opening = None if calls and style == "openai" and not message.get("content") else ""
    choices = [{"delta": {"role": "assistant", "content": opening}}]
    choices += [{"delta": {"reasoning_content": piece}} for piece in _pieces(message.get("reasoning_content") or "")]
    choices += [{"delta": {"content": piece}} for piece in _pieces(message.get("content") or "")]
    for index, call in enumerate(calls):
        head = {"id": call["id"], "type": call.get("type", "function")}
        name = call["function"]["name"]
        if style == "openai":
            fragments = [{"index": index, **head, "function": {"name": name, "arguments": ""}}]
            fragments += [{"index": index, "function": {"arguments": piece}} for piece in _argument_pieces(call["function"]["arguments"])]
        else:
            fragments = [{"index": index, **head, "function": {"name": name, "arguments": piece}}
                         for piece in _argument_pieces(call["function"]["arguments"])]
        choices += [{"delta": {"tool_calls": [fragment]}} for fragment in fragments]
    choices.append({"delta": {}, "finish_reason": "tool_calls" if calls else "stop"})
    return [{"index": 0, "finish_reason": None, **choice} for choice in choices]


class ScriptedApp:
    """The ASGI application: `/v1/chat/completions` and `/v1/models`."""

    def __init__(self, reply: ReplyFunc, api_key: str | None = None, model: str = "scripted", stream_style: StreamStyle = "openai"):
        self.reply = reply
        self.api_key = api_key
        self.model = model
        self.stream_style = stream_style
        self.faults: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"].removeprefix("/v1")
        if self.api_key is not None and not self._authorised(scope):
            await _send_json(send, 401, {"error": {"message": "Incorrect API key provided"}})
        elif path == "/models":
            await _send_json(send, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        elif path == "/chat/completions" and scope["method"] == "POST":
            await self._chat(receive, send)
        else:
            await _send_json(send, 404, {"error": {"message": f"no route {scope['path']}"}})

    def _authorised(self, scope) -> bool:
        headers = dict(scope["headers"])
        return headers.get(b"authorization", b"").decode() == f"Bearer {self.api_key}"

    async def _chat(self, receive, send) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        request = orjson.loads(body)
        self.requests.append(request)
        fault = self.faults.popleft() if self.faults else None
        if fault and fault.stall_s:
            await asyncio.sleep(fault.stall_s)
        if fault and fault.status:
            headers = {"retry-after": f"{fault.retry_after}"} if fault.retry_after is not None else {}
            await _send_json(send, fault.status, {"error": {"message": f"injected HTTP {fault.status}"}}, headers)
            return
        if fault and fault.malformed:
            await _send_raw(send, 200, b'{"id": "broken", "choices": [', {})
            return
        completion = self._completion(request)
        if request.get("stream") is True:
            await self._stream(completion, bool((request.get("stream_options") or {}).get("include_usage")), send)
        else:
            await _send_json(send, 200, completion)

    async def _stream(self, completion: dict[str, Any], include_usage: bool, send) -> None:
        base = {key: completion[key] for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        events = [{**base, "choices": [choice]} for choice in stream_chunks(completion["choices"][0]["message"], self.stream_style)]
        if include_usage:
            events.append({**base, "choices": [], "usage": completion["usage"]})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in events:
            await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(event) + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        reply = self.reply(request)
        message = {"role": "assistant", "content": reply} if isinstance(reply, str) else {"role": "assistant", **reply}
        prompt_text = " ".join(str(m.get("content") or "") for m in request.get("messages", []))
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": _count_tokens(prompt_text),
                "completion_tokens": _count_tokens(message.get("content") or ""),
                "total_tokens": 0,
            },
        }


async def _send_json(send, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
    await _send_raw(send, status, orjson.dumps(payload), headers or {})


async def _send_raw(send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BackgroundServer:
    """Serves any ASGI app with uvicorn in a background thread on loopback (port 0: a free
    one). `config` goes to `uvicorn.Config` (e.g. `lifespan="on"`, `http=...`)."""

    def __init__(self, app, *, port: int = 0, **config: Any):
        self.app = app
        self._config = {"lifespan": "off", "timeout_graceful_shutdown": 1, "log_level": "warning", **config}
        self._port = port
        self._server = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """The root URL, http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self._port, **self._config))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"uvicorn did not start serving {type(self.app).__name__}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class ScriptedServer(BackgroundServer):
    """Runs a `ScriptedApp` with uvicorn in a background thread on a free loopback port."""

    def __init__(self, reply: ReplyFunc | str = "OK", *, api_key: str | None = None, port: int = 0, stream_style: StreamStyle = "openai"):
        reply_func = reply if callable(reply) else (lambda _request, text=reply: text)
        super().__init__(ScriptedApp(reply_func, api_key=api_key, stream_style=stream_style), port=port)

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.app.requests

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        self.app.faults.extend([Fault(status=status, retry_after=retry_after)] * times)

    def stall_next(self, seconds: float, times: int = 1) -> None:
        self.app.faults.extend([Fault(stall_s=seconds)] * times)

    def malformed_next(self, times: int = 1) -> None:
        self.app.faults.extend([Fault(malformed=True)] * times)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a scripted OpenAI-compatible API on loopback.")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--reply", default="OK", help="the text every chat request gets back")
    parser.add_argument("--tool-call", nargs=2, metavar=("NAME", "ARGUMENTS"),
                        help="answer a conversation with no tool result yet with a call of tool NAME with ARGUMENTS (a JSON object); then --reply")
    args = parser.parse_args()
    import uvicorn

    call = tool_call(args.tool_call[0], orjson.loads(args.tool_call[1])) if args.tool_call else None

    def reply(request: dict[str, Any]) -> Reply:
        if call is None or any(message.get("role") == "tool" for message in request.get("messages", [])):
            return args.reply
        return {"content": None, "tool_calls": [call]}

    app = ScriptedApp(reply)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
