"""The vLLM back end: token-in/token-out rollouts and weight publishing.

The first half runs in the default suite: the client and the publishing protocol over an
`httpx.MockTransport` that answers as vLLM does, and the server's start-up failures.

The second half (`slow`) starts the real CPU build of vLLM from its own venv
(`bash benchmarks/setup_vllm.sh`) on SmolLM2-135M and checks what training relies on:
sampled ids and logprobs agree with the in-process model, a second turn extends the first
token for token, a published LoRA adapter or full weights change what is generated, and
a zero adapter or the original weights give back the base model's outputs. About 3
minutes on 2 cores, a minute of it vLLM's start-up (2.5 the first time after install):
`pytest -m slow tests/unit/train/test_vllm_engine.py`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import stat
import subprocess
import sys
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch  # noqa: E402
from fake_vllm import FakeVLLM, completion  # noqa: E402

from lmgym import errors  # noqa: E402
from lmgym.clients.http import http as _http  # noqa: E402
from lmgym.train.engines.vllm import (  # noqa: E402
    VLLMClient,
    VLLMEngine,
    VLLMServer,
    VLLMServerError,
    default_python,
    save_weights,
)
from lmgym.train.models import char_tokenizer, default_cache_dir, load_model, tiny_llama  # noqa: E402
from lmgym.train.render import encode, prompt_ids  # noqa: E402
from lmgym.train.vllm_reachable import unreachable  # noqa: E402

USER = [{"role": "user", "content": "say hi"}]


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


# --------------------------------------------------------------------------- the client


async def test_client_sends_prompt_ids_and_reads_back_sampled_ids(tokenizer):
    reply_ids = encode(tokenizer, "hi") + [tokenizer.eos_token_id]
    fake = FakeVLLM(lambda path, body: (200, completion(reply_ids, [-0.1, -0.2, -0.3], prompt=body["prompt"])))
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport)
    sampling = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 8, "stop": ["\n"], "seed": 3, "n": 4, "response_format": {}}
    response = await client.chat(USER, model="whatever-the-env-says", sampling=sampling)
    await client.aclose()

    (path, body), = fake.calls
    assert path == "/v1/completions"
    assert body["prompt"] == prompt_ids(tokenizer, USER)
    assert body["model"] == "base"  # the engine's name, not the environment's
    assert body["logprobs"] == 0 and body["return_token_ids"] is True
    assert {k: body[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed")} == {
        "temperature": 0.7, "top_p": 0.9, "max_tokens": 8, "stop": ["\n"], "seed": 3}
    assert "n" not in body and "response_format" not in body
    assert response.message == {"role": "assistant", "content": "hi"}
    assert response.token_ids == reply_ids and response.logprobs == [-0.1, -0.2, -0.3]
    assert response.prompt_token_ids == body["prompt"] and response.finish_reason == "stop"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (len(body["prompt"]), 3)


async def test_a_second_turn_extends_the_sampled_ids(tokenizer):
    reply_ids = encode(tokenizer, "hi") + [tokenizer.eos_token_id]
    fake = FakeVLLM(lambda path, body: (200, completion(reply_ids)))
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport)
    first = await client.chat(USER, sampling={"max_tokens": 4})
    conversation = [*USER, first.message, {"role": "user", "content": "again"}]
    second = await client.chat(conversation, sampling={"max_tokens": 4})
    await client.aclose()
    sampled = first.prompt_token_ids + first.token_ids
    assert second.prompt_token_ids[: len(sampled)] == sampled
    assert second.prompt_token_ids == prompt_ids(tokenizer, conversation)  # ChatML extends exactly


async def test_a_request_on_an_unloaded_adapter_retries_on_the_new_one(tokenizer):
    def reply(path, body):
        if body["model"] == "policy-v1":
            client.model = "policy-v2"  # a publish happened while the request was on its way
            return 404, {"error": {"message": "The model `policy-v1` does not exist."}}
        return 200, completion([5, 6])

    fake = FakeVLLM(reply)
    client = VLLMClient("http://vllm", tokenizer, model="policy-v1", transport=fake.transport)
    response = await client.chat(USER)
    await client.aclose()
    assert [body["model"] for _, body in fake.calls] == ["policy-v1", "policy-v2"]
    assert response.token_ids == [5, 6]


def test_the_client_serves_one_event_loop_after_another(tokenizer):
    """The synchronous orchestrator runs each step in a fresh `asyncio.run`."""
    fake = FakeVLLM(lambda path, body: (200, completion([5, 6])))
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport)
    for _ in range(2):
        assert asyncio.run(client.chat(USER)).token_ids == [5, 6]
    asyncio.run(client.aclose())


async def test_a_reply_without_token_ids_is_a_response_error(tokenizer):
    plain = {"choices": [{"text": "hi", "finish_reason": "stop", "logprobs": None}]}
    fake = FakeVLLM(lambda path, body: (200, plain))
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport, max_retries=0)
    with pytest.raises(errors.ModelResponseError, match="no token ids"):
        await client.chat(USER)
    await client.aclose()


async def test_a_bad_request_is_not_retried(tokenizer):
    fake = FakeVLLM(lambda path, body: (400, {"error": {"message": "max_tokens is too large"}}))
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport)
    with pytest.raises(errors.ModelRequestError, match="too large"):
        await client.chat(USER)
    await client.aclose()
    assert len(fake.calls) == 1


async def test_the_client_waits_as_long_as_the_server_asks(tokenizer):
    """Retry-After is honoured as by OpenAIClient: one retry policy (lmgym.clients.retry)."""
    replies = iter([(429, {"error": "slow down"}, {"retry-after-ms": "300"}), (200, completion([5, 6]))])
    fake = FakeVLLM(lambda path, body: next(replies))
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport, backoff_base=0.001, backoff_max=0.002)
    response = await client.chat(USER)
    await client.aclose()
    assert response.token_ids == [5, 6]
    assert fake.times[1] - fake.times[0] >= 0.3  # backoff alone would wait at most 2 ms


async def test_the_client_gives_up_as_the_openai_client_does(tokenizer):
    fake = FakeVLLM(lambda path, body: (503, {"error": "overloaded"}))
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport, max_retries=1, backoff_base=0.001, backoff_max=0.002)
    with pytest.raises(errors.ModelServerError, match=r"HTTP 503.*gave up after 2 attempts"):
        await client.chat(USER)
    await client.aclose()
    assert len(fake.calls) == 2


# --------------------------------------------------------------------------- publishing


def ok(path, body):
    if path.startswith("/reset_prefix_cache"):
        return 200, {"success": True}
    return 200, "Success"


def test_lora_publish_loads_the_adapter_switches_and_unloads_the_oldest(tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    fake = FakeVLLM(ok)
    engine = VLLMEngine("http://vllm", tokenizer, tmp_path, keep_versions=1, transport=fake.transport)
    engine.publish(model, 1)
    engine.publish(model, 2)
    engine.close()
    assert fake.calls == [
        ("/v1/load_lora_adapter", {"lora_name": "policy-v1", "lora_path": str(tmp_path / "adapters/v1"), "load_inplace": True}),
        ("/v1/load_lora_adapter", {"lora_name": "policy-v2", "lora_path": str(tmp_path / "adapters/v2"), "load_inplace": True}),
        ("/v1/unload_lora_adapter", {"lora_name": "policy-v1"}),
    ]
    assert engine.client.model == engine.model_name == "policy-v2" and engine.version == 2
    assert (tmp_path / "adapters/v2/adapter_config.json").exists() and not (tmp_path / "adapters/v1").exists()


def test_full_publish_pauses_reloads_resets_the_prefix_cache_and_resumes(tokenizer, tmp_path):
    fake = FakeVLLM(ok)
    engine = VLLMEngine("http://vllm", tokenizer, tmp_path, transport=fake.transport)
    engine.publish(tiny_llama(tokenizer), 1)
    engine.publish(tiny_llama(tokenizer), 2)
    engine.close()
    assert fake.calls[:4] == [
        ("/pause?mode=keep", {}),
        ("/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": str(tmp_path / "weights/v1")}}),
        ("/reset_prefix_cache?reset_running_requests=true", {}),
        ("/resume", {}),
    ]
    assert (tmp_path / "weights/v2/config.json").exists() and not (tmp_path / "weights/v1").exists()
    assert engine.client.model == "base"


def test_full_weights_are_saved_under_every_name_tied_ones_included(tokenizer, tmp_path):
    from safetensors.torch import load_file

    model = tiny_llama(tokenizer)  # ties the output layer to the input embedding
    saved = load_file(save_weights(model, tmp_path / "w") / "model.safetensors")
    assert set(saved) == set(model.state_dict())
    assert torch.equal(saved["lm_head.weight"], model.model.embed_tokens.weight)
    assert (tmp_path / "w/config.json").exists()


def test_a_failed_reload_still_resumes_generation(tokenizer, tmp_path):
    fake = FakeVLLM(lambda path, body: (500, {"error": "boom"}) if path == "/collective_rpc" else ok(path, body))
    engine = VLLMEngine("http://vllm", tokenizer, tmp_path, transport=fake.transport)
    with pytest.raises(VLLMServerError, match="collective_rpc failed"):
        engine.publish(tiny_llama(tokenizer), 1)
    engine.close()
    assert [path for path, _ in fake.calls] == ["/pause?mode=keep", "/collective_rpc", "/resume"]
    assert engine.version == 0


def test_closing_the_engine_twice_is_harmless(tokenizer, tmp_path):
    fake = FakeVLLM(ok)
    engine = VLLMEngine("http://vllm", tokenizer, tmp_path, transport=fake.transport)
    assert engine.snapshot() is engine  # the server holds its own copy of the weights
    engine.close()
    engine.close()
    assert fake.calls == []


def test_publish_to_a_server_without_the_dev_routes_says_how_to_start_it(tokenizer, tmp_path):
    fake = FakeVLLM(lambda path, body: (404, {"detail": "Not Found"}))
    engine = VLLMEngine("http://vllm", tokenizer, tmp_path, transport=fake.transport)
    with pytest.raises(VLLMServerError, match="VLLM_SERVER_DEV_MODE=1"):
        engine.publish(tiny_llama(tokenizer), 1)
    engine.close()


# --------------------------------------------------------------------------- the server


def model_folder(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_a_missing_vllm_python_names_the_setup_script(tmp_path):
    server = VLLMServer(model_folder(tmp_path), python=tmp_path / "nope/bin/python")
    with pytest.raises(VLLMServerError, match="setup_vllm.sh"):
        server.start()


def test_a_server_that_exits_reports_its_log_tail(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\necho \"boom: cannot load $5\"\nexit 3\n")
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
    server = VLLMServer(model_folder(tmp_path), python=fake_python, startup_timeout=30)
    with pytest.raises(VLLMServerError, match=r"exited with code 3[\s\S]*boom: cannot load .*model"):
        server.start()
    assert server._process is None


FAKE_SERVER = """
import http.server, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
class Models(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"data": []}')
http.server.HTTPServer(("127.0.0.1", port), Models).serve_forever()
"""

KILLED_OWNER = """
import os, sys
from lmgym.train.engines.vllm import VLLMServer
server = VLLMServer(sys.argv[1], python=sys.argv[2], startup_timeout=60).start()
print(server.url, flush=True)
os.kill(os.getpid(), 9)  # no atexit, no stop(): as torchrun's SIGKILL after a rank failed
"""


def test_a_server_stops_when_the_process_that_started_it_is_killed(tmp_path):
    fake_python = tmp_path / "python"
    fake_python.write_text(f"#!{sys.executable}\n{FAKE_SERVER}")
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
    owner = subprocess.run([sys.executable, "-c", KILLED_OWNER, str(model_folder(tmp_path)), str(fake_python)],
                           capture_output=True, text=True, timeout=120)
    assert owner.returncode == -9 and owner.stdout.startswith("http://"), owner.stderr[-2000:]
    url = owner.stdout.strip()
    deadline = time.monotonic() + 20
    while unreachable(url, timeout=2) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert unreachable(url, timeout=2) is not None, "the server outlived the process that started it"


# --------------------------------------------------------------------------- real vLLM (slow)



def needs_vllm(test):
    """Slow, and skipped where the vLLM venv is missing."""
    reason = f"no vLLM venv at {default_python()}: run `bash benchmarks/setup_vllm.sh` (or set $LMGYM_VLLM_PYTHON)"
    return pytest.mark.slow(pytest.mark.skipif(not default_python().exists(), reason=reason)(test))


PROMPTS = [[{"role": "user", "content": text}] for text in (
    "What is 2 + 3? Answer briefly.", "Name a colour.", "Write one sentence about the sea.", "Say hi.",
)]
TOLERANCE = 1e-3  # float32 on both sides; measured 2e-5


@pytest.fixture(scope="module")
def smollm2():
    model, tokenizer = load_model("smollm2")  # also writes the transformers folder vLLM serves
    return model, tokenizer


@pytest.fixture(scope="module")
def server(smollm2):
    with VLLMServer(default_cache_dir(), startup_timeout=900) as server:
        print(f"\nvLLM started in {server.startup_s:.0f}s")
        yield server


def sample(engine, prompts=PROMPTS, **sampling):
    async def run():
        return await asyncio.gather(*(engine.client.chat(p, sampling={"max_tokens": 24, **sampling}) for p in prompts))

    return asyncio.run(run())


def trainer_logprobs(model, response, temperature):
    """What the trainer computes for the sampled tokens (lmgym.train.trainer.token_logprobs)."""
    from lmgym.train.trainer import token_logprobs

    ids = torch.tensor([response.prompt_token_ids + response.token_ids])
    with torch.no_grad():
        logprobs = token_logprobs(model, ids, torch.ones_like(ids), temperature)
    return logprobs[0, len(response.prompt_token_ids) - 1 :].tolist()


def mismatch(model, responses, temperature):
    return max(
        abs(a - b) for r in responses for a, b in zip(trainer_logprobs(model, r, temperature), r.logprobs, strict=True)
    )


@needs_vllm
@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_vllm_samples_carry_ids_and_the_trainers_logprobs(server, smollm2, tmp_path, temperature):
    model, tokenizer = smollm2
    engine = VLLMEngine(server.url, tokenizer, tmp_path)
    responses = sample(engine, temperature=temperature, seed=0)
    for prompt, response in zip(PROMPTS, responses):
        assert response.prompt_token_ids == prompt_ids(tokenizer, prompt)
        assert len(response.token_ids) == len(response.logprobs) > 0
        if response.finish_reason == "stop":
            assert response.token_ids[-1] == tokenizer.eos_token_id  # the end-of-turn token is kept
    gap = mismatch(model, responses, temperature)
    print(f"\nmax |logprob(vLLM) - logprob(trainer)| at temperature {temperature}: {gap:.2e}")
    assert gap < TOLERANCE
    engine.close()


@needs_vllm
def test_vllm_second_turn_extends_the_first_token_for_token(server, smollm2, tmp_path):
    _, tokenizer = smollm2
    engine = VLLMEngine(server.url, tokenizer, tmp_path)

    async def run():
        first = await engine.client.chat(PROMPTS[0], sampling={"temperature": 0, "max_tokens": 24})
        conversation = [*PROMPTS[0], first.message, {"role": "user", "content": "Are you sure?"}]
        second = await engine.client.chat(conversation, sampling={"temperature": 0, "max_tokens": 8})
        return first, second

    first, second = asyncio.run(run())
    sampled = first.prompt_token_ids + first.token_ids
    assert second.prompt_token_ids[: len(sampled)] == sampled
    assert engine.client.template_mismatches == 0
    engine.close()


def greedy(engine):
    return [r.token_ids for r in sample(engine, temperature=0)]


@needs_vllm
def test_vllm_lora_publish_changes_generation_and_a_zero_adapter_does_not(server, smollm2, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_model, tokenizer = smollm2
    engine = VLLMEngine(server.url, tokenizer, tmp_path, keep_versions=1)
    base = greedy(engine)
    policy = get_peft_model(
        copy.deepcopy(base_model), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    )
    engine.publish(policy, 1)  # LoRA's B starts at zero: the base model
    assert engine.model_name == "policy-v1"
    assert greedy(engine) == base

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    engine.publish(policy, 2)
    print(f"\nLoRA publish took {engine.publish_s:.2f}s")
    trained = sample(engine, temperature=1.0, seed=1)
    assert greedy(engine) != base
    gap = mismatch(policy, trained, 1.0)
    print(f"max |logprob(vLLM + adapter) - logprob(peft model)|: {gap:.2e}")
    assert gap < TOLERANCE
    with _http.Client() as http:
        served = {m["id"] for m in json.loads(http.get(f"{server.url}/v1/models").content)["data"]}
    assert served == {"base", "policy-v2"}  # keep_versions=1 unloaded v1
    engine.close()


@needs_vllm
def test_vllm_full_publish_reloads_weights_in_place(server, smollm2, tmp_path):
    base_model, tokenizer = smollm2
    engine = VLLMEngine(server.url, tokenizer, tmp_path)
    base = greedy(engine)
    policy = copy.deepcopy(base_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every weight, the embedding (tied to the output layer) included
        for parameter in policy.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.1 * parameter.std())
    engine.publish(policy, 1)
    print(f"\nfull publish took {engine.publish_s:.2f}s")
    trained = sample(engine, temperature=1.0, seed=1)
    assert greedy(engine) != base
    gap = mismatch(policy, trained, 1.0)
    print(f"max |logprob(vLLM reloaded) - logprob(perturbed model)|: {gap:.2e}")
    assert gap < TOLERANCE
    engine.publish(base_model, 2)  # and back: the server is shared by the module's tests
    assert greedy(engine) == base
    engine.close()
