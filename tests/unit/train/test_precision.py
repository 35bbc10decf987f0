"""Precision and memory on the CPU: chunked float32 logprobs, bfloat16/float16 autocast with
float32 weights and AdamW state, gradient checkpointing, attention kernels."""

from __future__ import annotations

import contextlib
import importlib.util
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from train_setups import small_config  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from lmgym.errors import UsageError  # noqa: E402
from lmgym.train import logprobs as logprobs_module  # noqa: E402
from lmgym.train import session  # noqa: E402
from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.logprobs import next_token_logprobs, separable  # noqa: E402
from lmgym.train.metrics import NullSink  # noqa: E402
from lmgym.train.models import char_tokenizer, load_model, tiny_llama  # noqa: E402
from lmgym.train.precision import cpu_precision_notice, matmul_slowdown  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402

START, TEMPERATURE = 5, 0.7


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


def batch_ids(tokenizer, rows=3, width=40, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, len(tokenizer), (rows, width), generator=generator)
    attention = torch.ones_like(ids)
    attention[1, -6:] = 0  # a right-padded row
    return ids, attention


def plain_logprobs(model, ids, attention):
    """The whole batch's logits at once: what chunking must reproduce."""
    logits = model(input_ids=ids, attention_mask=attention).logits.float()[:, START:-1] / TEMPERATURE
    return torch.log_softmax(logits, -1).gather(-1, ids[:, START + 1 :, None]).squeeze(-1)


def positions_bytes(rows, positions, vocab):
    return rows * positions * vocab * 4


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------- chunked logprobs


@pytest.mark.parametrize("positions", [1, 7, None], ids=["one-position", "seven-positions", "one-chunk"])
def test_chunked_logprobs_equal_unchunked_ones_and_so_do_their_gradients(tokenizer, positions):
    model = tiny_llama(tokenizer, seed=3)
    ids, attention = batch_ids(tokenizer)
    expected = plain_logprobs(model, ids, attention)
    expected.sum().backward()
    expected_grads = grads(model)
    model.zero_grad(set_to_none=True)
    chunk = None if positions is None else positions_bytes(3, positions, len(tokenizer))
    got = next_token_logprobs(model, ids, attention, TEMPERATURE, START, chunk_bytes=chunk)
    assert got.dtype == torch.float32 and got.shape == expected.shape == (3, 40 - 1 - START)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    got.sum().backward()
    for name, grad in grads(model).items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-5, msg=name)  # sums of ~1e2 terms of ~10


def test_chunks_bound_the_logits_held_forward_and_backward(tokenizer):
    """Four positions of logits at a time: the head never sees more, and nothing of the
    batch's size over the vocabulary is kept for the backward pass (it is recomputed)."""
    model = tiny_llama(tokenizer, seed=3)
    ids, attention = batch_ids(tokenizer)
    vocab, width = len(tokenizer), ids.shape[1] - 1 - START
    head_outputs, saved = [], []
    model.lm_head.register_forward_hook(lambda module, args, out: head_outputs.append(tuple(out.shape)))

    def pack(tensor):
        saved.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logprobs = next_token_logprobs(model, ids, attention, TEMPERATURE, START, chunk_bytes=positions_bytes(3, 4, vocab))
    logprobs.sum().backward()
    chunks = -(-width // 4)
    assert len(head_outputs) == 2 + 2 * chunks  # the once-per-model check (twice), each chunk, each chunk again in backward
    assert all(shape[1] <= 4 for shape in head_outputs[2:]) and all(shape[-1] == vocab for shape in head_outputs)
    assert not [shape for shape in saved if shape[-1] == vocab and len(shape) == 3 and shape[1] > 4]


class ScaledLogits(LlamaForCausalLM):
    """Logits that are not head(body): a final scale, as some architectures apply."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2.0
        return out


def test_a_model_whose_logits_are_not_head_of_body_runs_whole(tokenizer):
    model = ScaledLogits(tiny_llama(tokenizer, seed=3).config)
    ids, attention = batch_ids(tokenizer)
    assert not separable(model, ids, attention)
    expected = plain_logprobs(model, ids, attention)
    got = next_token_logprobs(model, ids, attention, TEMPERATURE, START, chunk_bytes=positions_bytes(3, 5, len(tokenizer)))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert separable(tiny_llama(tokenizer), ids, attention)


# ------------------------------------------------------------------------------- a trainer step


def one_step(tmp_path, *overrides):
    """A loop, its first batch and the trainer's step on it (the optimiser step kept)."""
    loop = build_loop(small_config(tmp_path, "trainer.max_steps=1", *overrides), tmp_path, NullSink())
    batch = loop.orchestrator.next_batch(loop.step)
    return loop, batch


def linear_output_dtypes(model):
    dtypes = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda m, args, out: dtypes.add(out.dtype))
    return dtypes


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_bfloat16_step_trains_with_float32_weights_adam_state_and_logprobs(tmp_path, lora):
    loop, batch = one_step(tmp_path, "model.dtype=bfloat16", f"model.lora.enabled={str(lora).lower()}")
    trainer = loop.trainer
    before = {n: p.detach().clone() for n, p in loop.model.named_parameters() if p.requires_grad}
    dtypes = linear_output_dtypes(loop.model)
    metrics = trainer.step(batch)
    assert torch.bfloat16 in dtypes  # matmuls ran in bfloat16
    assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["grad_norm"] > 0
    assert {p.dtype for p in loop.model.parameters()} == {torch.float32}
    state = [v for s in trainer.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim > 0]
    assert state and {v.dtype for v in state} == {torch.float32}
    after = dict(loop.model.named_parameters())
    assert any(not torch.equal(after[n], p) for n, p in before.items())
    # the logprobs of the loss are float32, and close to float32 compute
    assert 0 < metrics["sampler_mismatch"] < 0.05 and metrics["mismatch_kl"] < 1e-3


def test_float16_step_scales_the_loss(tmp_path):
    loop, batch = one_step(tmp_path, "model.dtype=float16")
    trainer = loop.trainer
    metrics = trainer.step(batch)
    assert trainer.precision.scaler is not None and torch.isfinite(torch.tensor(metrics["loss"]))
    assert {p.dtype for p in loop.model.parameters()} == {torch.float32}
    assert trainer.state_dict()["loss_scale"]["scale"] > 0
    trainer.load_state_dict(trainer.state_dict())


def test_sampler_logprobs_match_the_trainers_in_float32_with_small_chunks(tmp_path, monkeypatch):
    """On-policy and float32: the trainer's (chunked) logprobs are the sampler's."""
    loop, batch = one_step(tmp_path)
    vocab = loop.model.config.vocab_size
    monkeypatch.setattr(logprobs_module, "LOGITS_CHUNK_BYTES", positions_bytes(8, 2, vocab))  # 2 positions of a micro-batch
    metrics = loop.trainer.step(batch)
    assert metrics["sampler_mismatch"] < 1e-5 and metrics["mismatch_kl"] < 1e-8


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients_keeping_less(tmp_path, lora):
    def gradient_and_saved(name, checkpointing):
        loop, batch = one_step(tmp_path / name, f"trainer.gradient_checkpointing={checkpointing}",
                               f"model.lora.enabled={str(lora).lower()}", "trainer.max_grad_norm=1e9")
        saved = []

        def pack(tensor):
            saved.append(tensor.numel() * tensor.element_size())
            return tensor

        modes = [m.training for m in loop.model.modules()]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loop.trainer.step(batch)
        assert [m.training for m in loop.model.modules()] == modes  # the policy is left in the mode it was in
        return {n: p.grad.clone() for n, p in loop.model.named_parameters() if p.grad is not None}, sum(saved), batch

    plain, plain_saved, batch = gradient_and_saved("plain", "false")
    checkpointed, checkpointed_saved, batch_again = gradient_and_saved("checkpointed", "true")
    assert [s.input_ids for s in batch.samples] == [s.input_ids for s in batch_again.samples]
    assert plain.keys() == checkpointed.keys() and any(float(g.abs().max()) > 0 for g in plain.values())
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert checkpointed_saved < 0.7 * plain_saved, (checkpointed_saved, plain_saved)


# ------------------------------------------------------------------------------- attention kernels


def test_eager_and_sdpa_attention_give_the_same_logprobs(tokenizer):
    ids, attention = batch_ids(tokenizer)
    sdpa, _ = load_model("tiny-llama", attn_implementation="sdpa", seed=2)
    eager, _ = load_model("tiny-llama", attn_implementation="eager", seed=2)
    assert (sdpa.config._attn_implementation, eager.config._attn_implementation) == ("sdpa", "eager")
    with torch.no_grad():
        torch.testing.assert_close(next_token_logprobs(eager, ids, attention, 1.0), next_token_logprobs(sdpa, ids, attention, 1.0),
                                   atol=1e-5, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_attention_without_the_package_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="flash_attention_2.*needs the flash-attn package"):
        load_model("tiny-llama", attn_implementation="flash_attention_2")
    config = load_config(None, ["model.attn_implementation=flash_attention_2", "model.dtype=bfloat16", f"logging.output_dir={tmp_path}"])
    with pytest.raises(UsageError, match="flash-attn package"):
        build_loop(config, tmp_path, NullSink())


def test_bfloat16_sampling_runs_at_the_trainers_precision(tmp_path, monkeypatch):
    """The in-process sampler computes under the trainer's autocast: its logprobs of the sampled
    tokens are nearer the trainer's than a float32 sampler's are (SmolLM2: 0.025 apart then)."""
    def mismatch(name):
        loop, batch = one_step(tmp_path / name, "model.dtype=bfloat16")
        return loop.trainer.step(batch)["sampler_mismatch"]

    at_training_precision = mismatch("bf16")
    monkeypatch.setattr(session, "Precision", lambda *args: SimpleNamespace(autocast=contextlib.nullcontext))
    in_float32 = mismatch("fp32")
    assert at_training_precision < 0.6 * in_float32, (at_training_precision, in_float32)


# ------------------------------------------------------------------------- reduced precision on a CPU


def test_a_cpu_that_emulates_bfloat16_gets_a_notice_naming_the_setting_and_the_factor():
    notice = cpu_precision_notice("bfloat16", "cpu", slowdown=lambda dtype: 43.2)
    assert notice.startswith('model.dtype = "bfloat16": this CPU runs a bfloat16 matmul 43× slower')
    assert 'model.dtype = "float32"' in notice


def test_no_notice_where_reduced_precision_is_fast_or_not_asked_for():
    measured: list = []

    def slowdown(dtype):
        measured.append(dtype)
        return 0.6  # native bfloat16 (AMX, AVX512-BF16): faster than float32

    assert cpu_precision_notice("bfloat16", "cpu", slowdown=slowdown) is None
    assert measured == [torch.bfloat16]
    assert cpu_precision_notice("float32", "cpu", slowdown=slowdown) is None
    assert cpu_precision_notice("float16", "cuda", slowdown=slowdown) is None
    assert measured == [torch.bfloat16]  # neither float32 nor a GPU is measured


def test_the_slowdown_is_measured_on_real_matmuls():
    assert 0.2 < matmul_slowdown(torch.float32) < 5  # float32 against itself
    assert matmul_slowdown(torch.bfloat16) > 0


def test_a_training_run_announces_the_notice_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(session, "cpu_precision_notice", lambda dtype, device: f"notice for {dtype} on {device.type}")
    one_step(tmp_path, "model.dtype=bfloat16", "logging.console_every=1")
    assert capsys.readouterr().out.count("notice for bfloat16 on cpu") == 1
