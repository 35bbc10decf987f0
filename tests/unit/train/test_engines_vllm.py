"""`engine.kind = "vllm"` wired end to end without vLLM: training attached (`engine.base_url`)
to a loopback server that answers the completions and publishing routes as vLLM does.

The real server is in the slow tests (tests/e2e/test_vllm_training.py); this checks, in
seconds, what the trainer, the orchestrators and the engine do with it: every step's
weights are published (reloaded in place, or loaded as an adapter that later requests
name), and asynchronous batches stay within the staleness bound.
"""

from __future__ import annotations

import orjson
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("uvicorn")

from scripted import read_body, serving  # noqa: E402
from train_setups import ListSink, small_config  # noqa: E402

from lmgym.train.engines.vllm import VLLMEngine  # noqa: E402
from lmgym.train.models import char_tokenizer  # noqa: E402
from lmgym.train.orchestrator import AsyncOrchestrator, Orchestrator  # noqa: E402
from lmgym.train.render import encode  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402


class LoopbackVLLM:
    """An ASGI app answering `/v1/completions` (token ids in, a fixed reply's ids and
    logprobs out) and the routes `VLLMEngine.publish` calls; records every request."""

    def __init__(self, reply: str = "321"):
        tokenizer = char_tokenizer()
        self.ids = encode(tokenizer, reply) + [tokenizer.eos_token_id]
        self.reply = reply
        self.requests: list[tuple[str, dict]] = []

    def answer(self, path: str, body: dict) -> object:
        if path == "/v1/completions":
            choice = {
                "index": 0, "text": self.reply, "finish_reason": "stop", "token_ids": self.ids,
                "prompt_token_ids": body["prompt"], "logprobs": {"token_logprobs": [-0.5] * len(self.ids)},
            }
            return {"object": "text_completion", "model": body["model"], "choices": [choice]}
        if path == "/reset_prefix_cache":
            return {"success": True}
        return "Success"

    async def __call__(self, scope, receive, send):
        raw = await read_body(receive)
        body = orjson.loads(raw) if raw else {}
        self.requests.append((scope["path"], body))
        content = orjson.dumps(self.answer(scope["path"], body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": content})

    def paths(self, path: str) -> list[dict]:
        return [body for p, body in self.requests if p == path]


def train_against(server: LoopbackVLLM, tmp_path, *overrides: str):
    with serving(server) as url:
        sink = ListSink()
        trainer = build_loop(
            small_config(tmp_path, "engine.kind=vllm", f"engine.base_url={url.removesuffix('/v1')}", "trainer.max_steps=2", *overrides),
            tmp_path, sink,
        )
        assert isinstance(trainer.orchestrator.engine, VLLMEngine)
        trainer.run()
    return trainer, [metrics for _, metrics in sink.rows]


def test_full_weights_are_reloaded_in_place_after_every_step(tmp_path):
    server = LoopbackVLLM()
    trainer, rows = train_against(server, tmp_path)
    assert type(trainer.orchestrator) is Orchestrator
    assert len(rows) == 2 and [m["staleness"] for m in rows] == [0.0, 0.0]
    reloads = server.paths("/collective_rpc")
    assert [r["kwargs"]["weights_path"] for r in reloads] == [str(tmp_path / "weights" / f"v{v}") for v in (1, 2)]
    assert {r["model"] for r in server.paths("/v1/completions")} == {"base"}
    assert len(server.paths("/pause")) == len(server.paths("/resume")) == 2


def test_lora_adapters_are_loaded_and_named_by_later_requests_while_generation_runs_ahead(tmp_path):
    server = LoopbackVLLM()
    trainer, rows = train_against(server, tmp_path, "model.lora.enabled=true", "algorithm.max_off_policy_steps=1", "trainer.max_steps=3")
    assert isinstance(trainer.orchestrator, AsyncOrchestrator) and trainer.orchestrator._thread is None
    assert len(rows) == 3 and max(m["staleness"] for m in rows) <= 1
    assert [r["lora_name"] for r in server.paths("/v1/load_lora_adapter")] == ["policy-v1", "policy-v2", "policy-v3"]
    assert [r["lora_name"] for r in server.paths("/v1/unload_lora_adapter")] == ["policy-v1"]  # keep_versions = 2
    names = [r["model"] for r in server.paths("/v1/completions")]
    # batch 2 may lag one version: it was sampled by an adapter, after the first publish
    assert names[0] == "base" and {"policy-v1", "policy-v2"} & set(names) and set(names) <= {"base", "policy-v1", "policy-v2", "policy-v3"}
