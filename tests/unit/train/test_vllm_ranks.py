"""Several trainer ranks on vLLM: which server each rank samples from, rank 0 publishing to
every server while the others only switch to the new version, and a server that some rank
cannot reach refused before the first step with one message (here against a closed port,
so no vLLM is needed; tests/e2e/test_vllm_ranks.py trains against the real one)."""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from cli_runner import ROOT, assert_one_error, invoke  # noqa: E402
from fake_vllm import FakeVLLM  # noqa: E402
from rank_steps import reach_outcomes  # noqa: E402

from lmgym.clients.http import http as _http  # noqa: E402
from lmgym.testing import ScriptedServer  # noqa: E402
from lmgym.train.config import load_config, server_urls  # noqa: E402
from lmgym.train.engines.vllm import VLLMEngine  # noqa: E402
from lmgym.train.models import char_tokenizer, tiny_llama  # noqa: E402
from lmgym.train.vllm_reachable import rank_checks, unreachable, unreachable_message  # noqa: E402

CONFIG = str(ROOT / "configs" / "reverse-digits.toml")


def ok(path, body):
    return (200, {"success": True}) if path.startswith("/reset_prefix_cache") else (200, "Success")


def by_host(fakes):
    """One transport that hands each request to the fake server of its host."""
    return _http.MockTransport(lambda request: fakes[request.url.host](request))


def lora_model(tokenizer):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(tiny_llama(tokenizer), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_base_url_lists_servers_separated_by_commas():
    assert server_urls("http://a:8000/, http://b:8000") == ["http://a:8000", "http://b:8000"]
    config = load_config(CONFIG, ["engine.base_url=http://a:1,http://b:2,"])
    assert config.engine.servers == ["http://a:1", "http://b:2"]
    assert load_config(CONFIG, []).engine.servers == []
    with pytest.raises(Exception, match="engine.base_url names no server"):
        load_config(CONFIG, ["engine.base_url= , "])


def test_rank_0_publishes_an_adapter_to_every_server(tmp_path):
    tokenizer = char_tokenizer()
    fakes = {"a": FakeVLLM(ok), "b": FakeVLLM(ok)}
    engine = VLLMEngine("http://b", tokenizer, tmp_path, servers=["http://a", "http://b"], keep_versions=1, transport=by_host(fakes))
    model = lora_model(tokenizer)
    engine.publish(model, 1)
    engine.publish(model, 2)
    engine.close()
    for fake in fakes.values():
        assert [(path, body.get("lora_name")) for path, body in fake.calls] == [
            ("/v1/load_lora_adapter", "policy-v1"), ("/v1/load_lora_adapter", "policy-v2"), ("/v1/unload_lora_adapter", "policy-v1"),
        ]
    assert engine.model_name == "policy-v2" and engine.client.base_url == "http://b"


def test_rank_0_reloads_full_weights_on_every_server(tmp_path):
    tokenizer = char_tokenizer()
    fakes = {"a": FakeVLLM(ok), "b": FakeVLLM(ok)}
    engine = VLLMEngine("http://a", tokenizer, tmp_path, servers=["http://a", "http://b"], transport=by_host(fakes))
    engine.publish(tiny_llama(tokenizer), 1)
    engine.close()
    for fake in fakes.values():
        assert [path for path, _ in fake.calls] == [
            "/pause?mode=keep", "/collective_rpc", "/reset_prefix_cache?reset_running_requests=true", "/resume"]
    assert engine.model_name == "base"


def test_a_rank_that_does_not_publish_only_names_the_new_version(tmp_path):
    tokenizer = char_tokenizer()
    fake = FakeVLLM(ok)
    engine = VLLMEngine("http://a", tokenizer, tmp_path, servers=[], transport=fake.transport)
    engine.publish(lora_model(tokenizer), 3)
    engine.close()
    assert fake.calls == [] and not (tmp_path / "adapters").exists()
    assert engine.model_name == "policy-v3" and engine.version == 3


def test_unreachable_servers_are_named_once_with_the_ranks_they_failed_for():
    problem = unreachable(f"http://127.0.0.1:{closed_port()}", timeout=5)
    assert problem is not None and "\n" not in problem
    checks = [(0, "http://x:1", "ConnectError: refused"), (1, "http://y:2", None), (2, "http://x:1", "ConnectError: refused")]
    message = unreachable_message(checks)
    assert message.startswith("no vLLM server answers at http://x:1 from rank 0, 2 (ConnectError: refused)")
    assert "http://y:2" not in message
    assert unreachable_message([(0, "http://y:2", None)]) is None


def test_the_launcher_checks_each_ranks_server_asking_each_once():
    with ScriptedServer() as server:  # answers GET /v1/models as a vLLM server does
        up, down = server.base_url.removesuffix("/v1"), f"http://127.0.0.1:{closed_port()}"
        checks = rank_checks([up, down], 3)
    assert [(rank, url) for rank, url, _ in checks] == [(0, up), (1, down), (2, up)]
    assert checks[0][2] is None and checks[2][2] is None and checks[1][2].startswith("ConnectError")


def test_a_server_no_rank_can_reach_is_refused_before_any_process_starts(tmp_path):
    """`lmgym train --nproc 2` asks the listed server itself, once, before torchrun."""
    url = f"http://127.0.0.1:{closed_port()}"
    run_dir = tmp_path / "run"
    result = invoke(
        "train", CONFIG, "--nproc", "2", "--engine.kind", "vllm", "--engine.base_url", url, "--algorithm.prompts_per_step", "2",
        "--algorithm.group_size", "4", "--trainer.micro_batch_size", "8", "--sft.warm_start", "false",
        "--logging.output_dir", str(run_dir), env={"COLUMNS": "400"},
    )
    assert result.returncode == 2, result.output
    assert_one_error(result, f"no vLLM server answers at {url} from rank 0, 1 (ConnectError")
    assert "starting 2 training processes" not in result.output
    assert not run_dir.exists()  # refused before the run wrote anything


def test_a_server_the_ranks_cannot_reach_stops_both_with_rank_0s_one_message(rank_step_runs):
    """The ranks check again once they run (the launcher's machine may not be theirs):
    rank 0 raises the one message naming both ranks, rank 1 stops without repeating it."""
    url, (rank0, rank1) = reach_outcomes(rank_step_runs)
    assert rank0.startswith(f"UsageError: no vLLM server answers at {url} from rank 0, 1 (ConnectError"), rank0
    assert rank1 == "ReportedByMain: rank 0 reports the error"
