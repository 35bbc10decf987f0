"""How the in-process engine draws tokens: batched sampling from a transformers causal LM.

Prompts of different lengths are left-padded into one batch; the prompt is prefilled
once and each new token reuses the KV cache. For each sampled token the engine returns
its id and its logprob under the *sampling policy*: log-softmax of logits / temperature
over the full vocabulary (top-p only decides which tokens may be drawn). The trainer
computes the same quantity, so on-policy importance ratios are 1 up to float error.
Temperature 0 is greedy decoding, with logprobs of the untempered distribution. Under a
lower training precision (`model.dtype`), the forward passes run under the trainer's
autocast too, so both compute the same numbers up to the order of the sums.

`Sampler` samples from the module it is given, the trainer's own in training (see
`lmgym.train.engines.local` for the engine around it). How it runs the model each token
(a growing or a static KV cache, CUDA graphs) is its decoder (`lmgym.train.engines.decoding`,
`engine.generation`); sampling and stopping are the same whichever runs.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from lmgym.train.engines.decoding import is_sharded, make_decoder, resolve_generation
from lmgym.train.render import stop_strings


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (end-of-turn token or stop string) or "length"
    text: str


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()

    @classmethod
    def from_request(cls, sampling: dict[str, Any] | None, default_max_tokens: int = 16) -> SamplingParams:
        sampling = dict(sampling or {})
        return cls(
            temperature=float(sampling.get("temperature", 1.0)),
            top_p=float(sampling.get("top_p", 1.0)),
            max_tokens=int(sampling.get("max_tokens") or sampling.get("max_completion_tokens") or default_max_tokens),
            stop=stop_strings(sampling),
        )


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row of `logits` (B, V); returns (ids (B,), logprobs (B,))."""
    if params.temperature <= 0:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        ids = logprobs.argmax(dim=-1)
        return ids, logprobs.gather(-1, ids[:, None]).squeeze(-1)
    logprobs = torch.log_softmax(logits.float() / params.temperature, dim=-1)  # (B, V)
    probs = logprobs.exp()
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > params.top_p  # keep the first past p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return ids, logprobs.gather(-1, ids[:, None]).squeeze(-1)


def end_of_turn_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a reply: the tokenizer's eos and the model's configured ones."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
    ids.discard(None)
    return ids


def cache_keyword(model: Any) -> str:
    """How the model's forward names its KV cache: `cache` since transformers 5.x renamed
    it (the old `past_key_values` still works there, with a deprecation warning on every
    run), `past_key_values` before. A LoRA wrapper forwards to its base model's."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class Sampler:
    """Samples completions for batches of token prompts with a causal LM. `generation` is
    `engine.generation`, resolved at the first batch, once the model is where it samples;
    `notify` gets the one-line notice when that is not the decoder asked for."""

    def __init__(self, model: Any, tokenizer: Any, *, seed: int = 0, max_batch_size: int = 256,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                 generation: str = "auto", notify: Callable[[str], None] = lambda line: print(line, file=sys.stderr)):
        self.model = model
        self.autocast = autocast  # the trainer's compute precision, so sampled logprobs are the trainer's
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        self.stop_ids = end_of_turn_ids(model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.cache_keyword = cache_keyword(model)
        self.generation, self.notify = generation, notify
        self.decoder: Any = None

    def generate(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[Sample]:
        samples: list[Sample] = []
        for start in range(0, len(prompts), self.max_batch_size):
            samples += self._generate_batch(prompts[start : start + self.max_batch_size], params)
        return samples

    def _decoder(self, device: torch.device) -> Any:
        if self.decoder is None:
            generation, notice = resolve_generation(self.generation, device, is_sharded(self.model))
            if notice:
                self.notify(notice)
            self.decoder = make_decoder(generation, self.model, self.cache_keyword, self.pad_id)
        return self.decoder

    @torch.no_grad()
    def _generate_batch(self, prompts: Sequence[list[int]], params: SamplingParams) -> list[Sample]:
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        decoder = self._decoder(device)
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        batch = len(prompts)
        tokens: list[list[int]] = [[] for _ in range(batch)]
        logprobs: list[list[float]] = [[] for _ in range(batch)]
        finish = ["length"] * batch
        active = torch.ones(batch, dtype=torch.bool)
        with self.autocast():
            logits = decoder.prefill(input_ids, attention, params.max_tokens)
        for step in range(params.max_tokens):
            ids, lps = sample_next(logits, params, self.generator)
            id_list, lp_list = ids.tolist(), lps.tolist()  # one device sync per step
            for row in torch.nonzero(active).flatten().tolist():
                token = id_list[row]
                tokens[row].append(token)
                logprobs[row].append(lp_list[row])
                if token in self.stop_ids or self._hit_stop_string(tokens[row], params.stop):
                    finish[row], active[row] = "stop", False
            if not active.any() or step == params.max_tokens - 1:
                break
            on_device = active.to(device)
            with self.autocast():
                logits = decoder.step(torch.where(on_device, ids.to(device), self.pad_id)[:, None], on_device)
        decoder.end()
        self.model.train(was_training)
        return [Sample(t, lp, f, self._text(t, params.stop)) for t, lp, f in zip(tokens, logprobs, finish)]

    def _hit_stop_string(self, ids: list[int], stop: tuple[str, ...]) -> bool:
        if not stop:
            return False
        tail = self.tokenizer.decode(ids[-16:], skip_special_tokens=False)
        return any(s in tail for s in stop)

    def _text(self, ids: list[int], stop: tuple[str, ...]) -> str:
        """The reply text: special tokens dropped, cut before the first stop string."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for s in stop:
            if s in text:
                text = text[: text.index(s)]
        return text
