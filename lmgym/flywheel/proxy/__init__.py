"""An OpenAI-compatible recording proxy: agents point their `base_url` here (`lmgym proxy`).

`ProxyApp` is a bare ASGI app (served by uvicorn) that forwards `/v1/chat/completions`
(streaming and not), `/v1/completions`, `/v1/models` and `/v1/models/{id}` to an upstream
OpenAI-compatible API with httpx, and hands each chat/completions exchange to a
`TraceWriter`, which appends it as one JSON line to `traces-00001.jsonl`, ...

A package of parts, one concept each: `app` (the ASGI app: routes, relaying, recording),
`access` (the route allow-list, forwarded headers, request limits), `upstream` (the
connection pool), `record` and `stream` (the trace's summary of a reply, streamed or not),
`writer` (the trace files).

What it guarantees:

* Clients authenticate with `Authorization: Bearer TOKEN`; a missing or wrong token gets
  401 and nothing is forwarded or recorded (unless the proxy runs with `token=None`).
* Only those routes go upstream, matched exactly on the decoded path (a model id is one
  path segment of safe characters), and the upstream URL is built from the route, never
  from the client's text: dot-segments, encoded `/`, `?`, `#` or CR/LF get 404, a query
  string 400, and nothing of them is forwarded or recorded.
* The request body goes upstream byte for byte; only the headers change: the client's
  `Authorization` is replaced by the upstream key; hop-by-hop headers (and those its
  `Connection` header names) are dropped, and so are its credential headers (`Cookie`,
  `OpenAI-Organization`, `OpenAI-Project`, `*api-key*`, `*auth*`, `*token*`, ...) unless
  named in `forward_headers`; `Accept-Encoding` is left to httpx, which decodes what
  comes back. In particular `stream_options.include_usage` is sent only when the client
  asked for it.
* What a client may send is bounded: a body over `max_body_bytes` (32 MB) gets 413 before
  more of it is read; a body not all arrived within `client_timeout` gets 408; headers
  not complete within `client_timeout` close the connection (`http_protocol`, which the
  CLI serves with); a client that hangs up mid-upload is not forwarded or recorded.
* Each upstream request is bounded as a whole: `timeout` runs from connecting to the last
  byte of the answer, a stream included, not from one read to the next (httpx's own
  timeouts), so an upstream that trickles a byte every half second cannot hold a client
  for longer. The choice: a whole-request bound is what a caller can plan with; a
  generation longer than `timeout` is cut, so set it above the slowest answer you expect.
* Streams are passed through event by event as they arrive (with the client's
  backpressure), while the content, tool calls, finish reason and usage are assembled
  from the SSE events for the trace. A client that hangs up mid-stream ends the upstream
  request; the partial exchange is recorded with an error. A stream the upstream breaks
  off or does not finish in time ends with an SSE error event (never half an event), so
  the SDKs raise instead of returning a cut answer as a whole one.
* Upstream errors reach the client as they came (status, body, `Retry-After` and the
  other headers) and are recorded. When the upstream cannot be reached the client gets
  502 (504 on a timeout), and so does the trace. A connection that fails before any
  response (a keep-alive connection the upstream closed as it was reused) is retried once.
* The upstream key is never logged, never written to a trace (every line is scrubbed of
  it as a last guard), and scrubbed from every body, header and stream event sent back
  to clients (an upstream that quotes the key in an error message or echoes it).
* Each trace line is written with one unbuffered `write(2)` on the event-loop thread, so
  concurrent exchanges never interleave and a crash of the proxy loses at most the
  exchanges in flight (an OS crash may also lose what the page cache held: no fsync).

Trace format (the contract with `lmgym traces`): one JSON object per line,

    {"id": "<uuid4 hex>",
     "session_id": str | null,          # the X-Session-Id header (configurable), if sent
     "endpoint": "/v1/chat/completions" | "/v1/completions",
     "started_at": float,               # unix time the request (all its body) had arrived
     "finished_at": float,              # unix time the response was complete (recorded
                                        # just before its last bytes go back to the client)
     "latency_s": float,                # finished - started, from a monotonic clock
     "stream": bool,                    # the request's "stream" field
     "request": {"model": str,
                 "messages": [...],     # chat; "prompt": ... instead for completions
                 "tools": [...] | null,
                 "sampling": {...}},    # every other request field except
                                        # messages/prompt/tools/model/stream/stream_options
     "status": int,                     # HTTP status the client got: the upstream's, or
                                        # 502/504 when the upstream was unreachable/too slow
     "response": {"model": str | null,
                  "content": str | null,        # null for a reply of tool calls only,
                                                # streamed or not
                  "reasoning_content": str | null,  # the reasoning text (reasoning_content,
                                                # or reasoning), from the message or deltas
                  "tool_calls": [...] | null,   # wire format: id, type, function{name, arguments};
                                                # streamed: id/type/name from the first fragment
                                                # that has them, arguments concatenated
                  "finish_reason": str | null} | null,    # null on an HTTP error
     "usage": {"prompt_tokens": int, "completion_tokens": int, "total_tokens": int} | null,
     "error": {"status": int, "body": <upstream error body, JSON or text>} | null}

Request messages are recorded as sent, `reasoning_content` of assistant turns included.
`response` describes the first choice (index 0): with `n > 1` the other choices reach the
client but are not recorded. A request body that is not a JSON object is still forwarded;
its trace has `"model": null` and empty fields. A stream that breaks or is abandoned has
both a partial `response` and an `error`. `/v1/models` is forwarded but not recorded. A
torn last line (a crash mid-write) is closed with a newline before appending, so readers
should skip lines that do not parse.
"""

from __future__ import annotations

from lmgym.flywheel.proxy.access import forwardable_header_names, http_protocol
from lmgym.flywheel.proxy.app import ProxyApp
from lmgym.flywheel.proxy.record import summarise_response
from lmgym.flywheel.proxy.stream import StreamAssembler, split_after_last_event
from lmgym.flywheel.proxy.upstream import _http  # noqa: F401 - the HTTP library in use (httpx2 or httpx), for tests
from lmgym.flywheel.proxy.writer import TraceWriter

__all__ = [
    "ProxyApp",
    "StreamAssembler",
    "TraceWriter",
    "forwardable_header_names",
    "http_protocol",
    "split_after_last_event",
    "summarise_response",
]
