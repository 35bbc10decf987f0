"""lmgym.train.models: the character tokenizer, the tiny Llama, SmolLM2 and load_model."""

import os
import subprocess
import sys
import time

import pytest
import torch

from lmgym.errors import UsageError
from lmgym.train import models
from lmgym.train.models import char_tokenizer, load_model, load_smollm2, save_model, tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONVERSATION = [
    {"role": "user", "content": "3817"},
    {"role": "assistant", "content": "7183"},
    {"role": "user", "content": "what is 2+2?"},
]


def render(tokenizer, messages, **kwargs):
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def token_ids(tokenizer, messages, **kwargs):
    return tokenizer.encode(render(tokenizer, messages, **kwargs), add_special_tokens=False)


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


# --- char_tokenizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["3817", "hello, world!\n(1+2)*3 = 9?", "  two  spaces  ", ""])
def test_char_tokenizer_round_trips_with_one_token_per_character(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == len(text)
    assert tokenizer.convert_ids_to_tokens(ids) == list(text)
    assert tokenizer.decode(ids) == text


def test_char_tokenizer_special_tokens(tokenizer):
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|im_end|>" and tokenizer.unk_token == "<|unk|>"
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}) == 3
    assert tokenizer.encode("<|im_start|>ab<|im_end|>", add_special_tokens=False) == [
        tokenizer.convert_tokens_to_ids("<|im_start|>"), *tokenizer.encode("ab", add_special_tokens=False),
        tokenizer.eos_token_id,
    ]
    assert tokenizer.decode(tokenizer.encode("ab<|im_end|>"), skip_special_tokens=True) == "ab"
    assert tokenizer.encode("AB", add_special_tokens=False) == [tokenizer.unk_token_id] * 2  # outside the alphabet


def test_char_tokenizer_vocabulary_is_specials_plus_alphabet():
    alphabet = "useraitnym\n0123456789"  # just the role letters, newline and digits
    tokenizer = char_tokenizer(alphabet)
    assert len(tokenizer) == 4 + len(alphabet)
    assert tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) == [*models.SPECIAL_TOKENS, *alphabet]


def test_char_tokenizer_rejects_bad_alphabets():
    with pytest.raises(ValueError, match="repeats '1'"):
        char_tokenizer(models.DEFAULT_ALPHABET + "1")
    with pytest.raises(ValueError, match="lacks"):
        char_tokenizer("0123456789")
    with pytest.raises(ValueError, match="at least one character"):
        char_tokenizer("")


def test_chat_template_renders_chatml(tokenizer):
    assert render(tokenizer, CONVERSATION[:1]) == "<|im_start|>user\n3817<|im_end|>\n"
    assert render(tokenizer, CONVERSATION[:2], add_generation_prompt=False) == (
        "<|im_start|>user\n3817<|im_end|>\n<|im_start|>assistant\n7183<|im_end|>\n"
    )


def test_chat_template_appends_the_generation_prompt(tokenizer):
    assert render(tokenizer, CONVERSATION[:1], add_generation_prompt=True) == (
        "<|im_start|>user\n3817<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_template_is_prefix_extending_at_token_level(tokenizer):
    rendered = [token_ids(tokenizer, CONVERSATION[:k]) for k in range(1, 4)]
    for shorter, longer in zip(rendered, rendered[1:]):
        assert len(longer) > len(shorter) and longer[: len(shorter)] == shorter
    with_prompt = token_ids(tokenizer, CONVERSATION[:1], add_generation_prompt=True)
    assert rendered[1][: len(with_prompt)] == with_prompt  # the reply's tokens follow the prompt's


# --- tiny_llama ---------------------------------------------------------------------------------


def test_tiny_llama_forward_shape_and_size(tokenizer):
    model = tiny_llama(tokenizer)
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config.pad_token_id == tokenizer.pad_token_id and model.config.eos_token_id == tokenizer.eos_token_id
    ids = torch.tensor([token_ids(tokenizer, CONVERSATION, add_generation_prompt=True)])
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer)) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_tiny_llama_is_deterministic_given_the_seed_and_leaves_the_global_rng_alone(tokenizer):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b, c = tiny_llama(tokenizer, seed=1), tiny_llama(tokenizer, seed=1), tiny_llama(tokenizer, seed=2)
    assert torch.equal(torch.rand(3), expected)
    for (name, pa), pb, _pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_tiny_llama_sizes_are_arguments(tokenizer):
    model = tiny_llama(tokenizer, hidden_size=32, layers=1, heads=2, intermediate_size=64)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be a multiple of heads \(4\)"):
        tiny_llama(tokenizer, hidden_size=30)
    with pytest.raises(ValueError, match="layers must be at least 1, got 0"):
        tiny_llama(tokenizer, layers=0)


def test_tiny_llama_generates_with_the_tokenizer(tokenizer):
    model = tiny_llama(tokenizer)
    ids = torch.tensor([token_ids(tokenizer, CONVERSATION[:1], add_generation_prompt=True)])
    out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] <= ids.shape[1] + 4 and torch.equal(out[0, : ids.shape[1]], ids[0])


# --- load_model and save_model --------------------------------------------------------------------


def test_load_model_tiny_llama():
    model, tokenizer = load_model("tiny-llama", hidden_size=32, seed=3)
    assert model.config.hidden_size == 32 and model.config.vocab_size == len(tokenizer)
    assert tokenizer.chat_template


def test_load_model_unknown_name_lists_the_choices(tmp_path):
    with pytest.raises(UsageError, match=r"unknown model 'gpt-9'.*'tiny-llama', 'smollm2'.*directory.*hub id"):
        load_model("gpt-9")
    with pytest.raises(UsageError, match="unknown model"):
        load_model(str(tmp_path / "missing"))


def test_load_model_bad_arguments_name_the_accepted_ones():
    with pytest.raises(UsageError, match=r"model 'tiny-llama': bad arguments .*hidden_size"):
        load_model("tiny-llama", width=3)


def test_load_model_takes_dtype_and_attention_for_every_kind_of_name(tmp_path, tokenizer):
    model, _ = load_model("tiny-llama", dtype=torch.bfloat16, attn_implementation="eager")
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "tiny")
    model, _ = load_model(str(tmp_path / "tiny"), dtype="bfloat16", attn_implementation="eager")
    assert model.dtype == torch.bfloat16 and model.config._attn_implementation == "eager"
    assert load_model(str(tmp_path / "tiny"))[0].dtype == torch.float32  # the default: what training needs
    with pytest.raises(UsageError, match="model.revision = 'v1' applies to Hugging Face hub ids"):
        load_model(str(tmp_path / "tiny"), revision="v1")
    with pytest.raises(UsageError, match="model.attn_implementation = 'flash'"):
        load_model("tiny-llama", attn_implementation="flash")


def test_save_and_load_round_trip_gives_identical_logits(tmp_path, tokenizer):
    model = tiny_llama(tokenizer, seed=5)
    save_model(model, tokenizer, tmp_path / "tiny")
    loaded, loaded_tokenizer = load_model(str(tmp_path / "tiny"))
    assert not loaded.training
    text = render(tokenizer, CONVERSATION, add_generation_prompt=True)
    assert loaded_tokenizer.encode(text) == tokenizer.encode(text)
    assert render(loaded_tokenizer, CONVERSATION) == render(tokenizer, CONVERSATION)
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_tokenizer_without_chat_template_is_a_usage_error(tmp_path):
    tokenizer = char_tokenizer()
    tokenizer.chat_template = None
    save_model(tiny_llama(tokenizer), tokenizer, tmp_path / "bare")
    with pytest.raises(UsageError, match=r"tokenizer of model '.*bare' has no chat template"):
        load_model(str(tmp_path / "bare"))


def test_directory_without_a_model_is_a_usage_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="does not hold a saved model"):
        load_model(str(tmp_path / "empty"))


def test_cache_dir_follows_lmgym_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LMGYM_CACHE", str(tmp_path))
    assert models.default_cache_dir() == tmp_path / "models" / "smollm2-135m-instruct"
    monkeypatch.delenv("LMGYM_CACHE")
    assert models.default_cache_dir().parts[-4:] == (".cache", "lmgym", "models", "smollm2-135m-instruct")


def test_interrupted_cache_write_leaves_nothing_behind(tmp_path):
    def fail(folder):
        (folder / "config.json").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        models.write_atomically(tmp_path / "cache", fail)
    assert list(tmp_path.iterdir()) == []
    models.write_atomically(tmp_path / "cache", lambda folder: (folder / "config.json").write_text("{}"))
    assert [p.name for p in tmp_path.iterdir()] == ["cache"] and (tmp_path / "cache" / "config.json").is_file()


def test_importing_lmgym_does_not_import_torch():
    code = "import sys, lmgym; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- SmolLM2 (slow: converting the GGUF takes ~25 s) -----------------------------------------------


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_from_the_cache(tmp_path):
    pytest.importorskip("gguf")
    cache = tmp_path / "smollm2"
    started = time.perf_counter()
    model, tokenizer = load_smollm2(cache_dir=cache)
    converted_s = time.perf_counter() - started
    assert not model.training and model.dtype == torch.float32
    assert not getattr(model, "is_quantized", False) and getattr(model, "hf_quantizer", None) is None  # trainable
    assert (cache / "config.json").is_file() and list(cache.glob("*.safetensors"))
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2"]  # no temporary directory left

    started = time.perf_counter()
    cached, cached_tokenizer = load_smollm2(cache_dir=cache)
    cached_s = time.perf_counter() - started
    print(f"\nSmolLM2: converted from GGUF in {converted_s:.1f}s, loaded from the cache in {cached_s:.1f}s")
    assert cached_s < converted_s

    prompt = [{"role": "user", "content": "What is 2+2?"}]
    text = render(tokenizer, prompt, add_generation_prompt=True)
    assert render(cached_tokenizer, prompt, add_generation_prompt=True) == text
    assert text.endswith("<|im_start|>assistant\n")
    ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    assert cached_tokenizer.encode(text, add_special_tokens=False) == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(cached(ids).logits, model(ids).logits)
        out = cached.generate(ids, max_new_tokens=12, do_sample=False)
    reply = cached_tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert "4" in reply, reply


@pytest.mark.slow
def test_load_model_smollm2_uses_the_lmgym_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LMGYM_CACHE", str(tmp_path))
    model, tokenizer = load_model("smollm2")
    assert (tmp_path / "models" / "smollm2-135m-instruct" / "config.json").is_file()
    assert model.config.vocab_size >= len(tokenizer) - 1 and tokenizer.chat_template
