"""The in-process engine's decoders (`engine.generation`) sample the same thing.

On the tiny model, on CPU, a batch of prompts of different lengths (left-padded, as the
sampler pads them): the static cache gives the dynamic cache's tokens, greedy and sampled
with one seed, with logprobs within float rounding (bfloat16 autocast too, at its coarser rounding); so
does the compiled step, compiled
here with dynamo's "eager" backend (the graph capture and step boundaries the GPU path
runs, without inductor or CUDA graphs), and batches in one shape bucket reuse its graph.
"compiled" off CUDA samples as static after a one-line notice; "auto" is dynamic on CPU.
Training with the static cache stays on policy: the trainer's logprobs are the sampler's.
"""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")

from train_setups import ListSink, small_config  # noqa: E402

from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.engines.decoding import (  # noqa: E402
    DynamicDecoder,
    StaticDecoder,
    bucket_rows,
    bucket_slots,
    resolve_generation,
)
from lmgym.train.engines.local import LocalEngine  # noqa: E402
from lmgym.train.engines.sampling import Sampler, SamplingParams  # noqa: E402
from lmgym.train.models import char_tokenizer, tiny_llama  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402

TEXTS = ["hello there", "ab", "a much longer prompt than the others", "x", "seven"]
TOLERANCE = 1e-5  # float32 on both sides; only the order of the attention sums differs


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_llama(tokenizer)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer.encode(text) for text in TEXTS]


def sampled(sampler, prompts, temperature: float, max_tokens: int = 24):
    return sampler.generate(prompts, SamplingParams(temperature=temperature, max_tokens=max_tokens))


def largest_gap(a, b) -> float:
    assert [s.token_ids for s in a] == [s.token_ids for s in b]
    return max(abs(x - y) for sa, sb in zip(a, b) for x, y in zip(sa.logprobs, sb.logprobs, strict=True))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_static_cache_samples_what_the_dynamic_one_does(model, tokenizer, prompts, temperature):
    dynamic = sampled(Sampler(model, tokenizer, seed=3, generation="dynamic"), prompts, temperature)
    static_sampler = Sampler(model, tokenizer, seed=3, generation="static")
    static = sampled(static_sampler, prompts, temperature)
    assert isinstance(static_sampler.decoder, StaticDecoder)
    gap = largest_gap(dynamic, static)
    print(f"temperature {temperature}: tokens equal, largest logprob gap {gap:.2e}")
    assert gap < TOLERANCE
    assert {len(s.token_ids) for s in dynamic} != {1}  # not a trivially short comparison
    assert [s.finish_reason for s in dynamic] == [s.finish_reason for s in static]


def test_under_bfloat16_autocast_the_static_cache_samples_what_the_dynamic_one_does(model, tokenizer, prompts):
    """`model.dtype = "bfloat16"`: the cache holds bfloat16 keys; rounding is coarser, so the
    tolerance is too (the trainer's own bfloat16 logprobs differ from float32 by more)."""
    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    dynamic = sampled(Sampler(model, tokenizer, generation="dynamic", autocast=bf16), prompts, 0.0)
    static = sampled(Sampler(model, tokenizer, generation="static", autocast=bf16), prompts, 0.0)
    gap = largest_gap(dynamic, static)
    print(f"bfloat16, greedy: tokens equal, largest logprob gap {gap:.2e}")
    assert gap < 0.05


def test_a_cache_allocating_values_in_the_keys_dtype_still_samples_under_autocast(model, tokenizer, prompts, monkeypatch):
    """transformers up to 5.17 (the GPU image's) allocates a static layer's values in its
    keys' dtype: float32 under autocast, while the values arrive in bfloat16. Simulated here
    on the installed transformers; the decoder widens the values as it writes them."""
    from transformers.cache_utils import StaticLayer

    allocate = StaticLayer.lazy_initialization

    def one_dtype_allocation(self, key_states, value_states):
        allocate(self, key_states, value_states.to(key_states.dtype))

    monkeypatch.setattr(StaticLayer, "lazy_initialization", one_dtype_allocation)

    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    dynamic = sampled(Sampler(model, tokenizer, generation="dynamic", autocast=bf16), prompts, 0.0)
    static_sampler = Sampler(model, tokenizer, generation="static", autocast=bf16)
    static = sampled(static_sampler, prompts, 0.0)
    layer = static_sampler.decoder.cache.layers[0]
    assert layer.keys.dtype == layer.values.dtype == torch.float32  # the old allocation did happen
    assert largest_gap(dynamic, static) < 0.05


def test_a_stop_string_ends_a_static_row_where_it_ends_a_dynamic_one(model, tokenizer, prompts):
    greedy = sampled(Sampler(model, tokenizer, generation="dynamic"), prompts[:1], 0.0)[0]
    stop = greedy.text[3:5]  # two characters the model writes, so the reply stops there
    params = SamplingParams(temperature=0.0, max_tokens=24, stop=(stop,))
    dynamic = Sampler(model, tokenizer, generation="dynamic").generate(prompts, params)
    static = Sampler(model, tokenizer, generation="static").generate(prompts, params)
    assert dynamic[0].finish_reason == "stop" and len(dynamic[0].token_ids) < len(greedy.token_ids)
    assert [(s.token_ids, s.finish_reason, s.text) for s in dynamic] == [(s.token_ids, s.finish_reason, s.text) for s in static]


def test_the_compiled_step_samples_the_same_and_reuses_its_graph_within_a_bucket(model, tokenizer, prompts):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    dynamic = Sampler(model, tokenizer, seed=5, generation="dynamic")
    compiled = Sampler(model, tokenizer, seed=5, generation="static")
    compiled.decoder = StaticDecoder(model, compiled.cache_keyword, compiled.pad_id,
                                     functools.partial(torch.compile, backend="eager", dynamic=False))
    before = counters["stats"]["unique_graphs"]
    for batch in (prompts[:4], prompts[1:4]):  # 4 and 3 rows, both in the 4-row bucket
        gap = largest_gap(sampled(dynamic, batch, 1.0, max_tokens=12), sampled(compiled, batch, 1.0, max_tokens=12))
        print(f"compiled ({len(batch)} rows): tokens equal, largest logprob gap {gap:.2e}")
        assert gap < TOLERANCE
    assert counters["stats"]["unique_graphs"] - before == 1
    torch._dynamo.reset()


def test_compiled_off_cuda_samples_as_static_after_one_notice(model, tokenizer, prompts):
    notices: list[str] = []
    sampler = Sampler(model, tokenizer, generation="compiled", notify=notices.append)
    sampled(sampler, prompts, 0.0, max_tokens=4)
    sampled(sampler, prompts, 0.0, max_tokens=4)
    assert isinstance(sampler.decoder, StaticDecoder) and not sampler.decoder.compiled
    assert len(notices) == 1 and "\n" not in notices[0]
    assert "CUDA" in notices[0] and "static" in notices[0]


def test_auto_is_compiled_on_cuda_only_and_never_on_sharded_weights():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_generation("auto", cuda) == ("compiled", None)
    assert resolve_generation("auto", cpu) == ("dynamic", None)
    assert resolve_generation("auto", cuda, sharded=True) == ("dynamic", None)
    assert resolve_generation("compiled", cuda) == ("compiled", None)
    assert resolve_generation("compiled", cuda, sharded=True)[0] == "static"
    assert resolve_generation("static", cpu) == ("static", None)
    with pytest.raises(ValueError, match="engine.generation"):
        resolve_generation("fast", cpu)


def test_shapes_are_bucketed_so_similar_batches_share_a_cache():
    assert [bucket_rows(n) for n in (1, 2, 3, 4, 5, 64, 65)] == [1, 2, 4, 4, 8, 64, 128]
    assert [bucket_slots(n) for n in (1, 64, 65, 150)] == [64, 64, 128, 192]


def test_the_config_setting_reaches_the_engine(model, tokenizer, prompts):
    config = load_config(None, ["engine.generation=static"])
    engine = LocalEngine(model, tokenizer, generation=config.engine.generation)
    engine.sampler.generate(prompts[:2], SamplingParams(max_tokens=2))
    snapshot = engine.snapshot()
    snapshot.sampler.generate(prompts[:2], SamplingParams(max_tokens=2))
    assert isinstance(engine.sampler.decoder, StaticDecoder) and isinstance(snapshot.sampler.decoder, StaticDecoder)
    assert load_config(None, []).engine.generation == "auto"
    default = LocalEngine(model, tokenizer)
    default.sampler.generate(prompts[:2], SamplingParams(max_tokens=2))
    assert isinstance(default.sampler.decoder, DynamicDecoder)  # auto, on CPU
    engine.close()


def test_training_with_the_static_cache_stays_on_policy(tmp_path):
    sink = ListSink()
    loop = build_loop(small_config(tmp_path, "trainer.max_steps=2", "engine.generation=static"), tmp_path, sink)
    loop.run()
    assert isinstance(loop.orchestrator.engine.sampler.decoder, StaticDecoder)
    trained = [m for _, m in sink.rows if "mismatch_kl" in m]
    print("mismatch_kl per step:", [f"{m['mismatch_kl']:.1e}" for m in trained])
    assert trained and all(m["mismatch_kl"] < 1e-10 for m in trained)  # positions off by one: ~5e-8
