"""How the sampler runs the model over one batch, token by token: its KV cache and step.

`engine.generation` picks one of three decoders; all give the same tokens and logprobs up
to float rounding (the order of sums differs), so the trainer's logprobs still match.

- "dynamic": transformers' default cache, grown by one slot a token. No set-up, any device;
  on a GPU every token pays Python and kernel-launch overhead for each layer.
- "static": a `StaticCache` preallocated for the batch's prompt + max_tokens. The attention
  mask is fixed for the whole batch (left padding off, every later slot on: the causal mask
  hides the slots not yet written), so each step's inputs have the same shapes and places.
- "compiled": "static" with its one-token step compiled by `torch.compile(mode=
  "reduce-overhead")`, which on a GPU replays the step as a CUDA graph: a few launches a
  token instead of hundreds. A replay writes its outputs into the graph's own memory, so
  each step is marked as new (`cudagraph_mark_step_begin`) and its logits are copied out at
  once; keeping a reference instead fails with "accessing tensor output of CUDAGraphs that
  has been overwritten by a subsequent run". The prefill (one call a batch, wide) runs
  uncompiled.

A compiled graph fits one shape, so static caches are sized in buckets: rows to a power of
two (filler rows of one pad token, whose logits are dropped before sampling), slots to a
multiple of `SLOT_BUCKET`. A cache is kept for the next batch of the same bucket: a new
one would move the cache's memory and record the graph again.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

GENERATIONS = ("auto", "dynamic", "static", "compiled")
SLOT_BUCKET = 64


def is_sharded(model: Any) -> bool:
    """FSDP units gather and free their weights around each forward: no graph can keep them."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed
        return False
    return any(isinstance(m, FSDPModule) for m in model.modules())


def resolve_generation(mode: str, device: torch.device, sharded: bool = False) -> tuple[str, str | None]:
    """The decoder to use for `mode` on `device`, and a one-line notice when it is not the
    one asked for. "auto" is compiled on CUDA and dynamic elsewhere; CUDA graphs need CUDA
    and unsharded weights, so "compiled" without them decodes as "static"."""
    if mode not in GENERATIONS:
        raise ValueError(f"engine.generation = {mode!r}: choose one of {', '.join(map(repr, GENERATIONS))}")
    if mode == "auto":
        return ("compiled" if device.type == "cuda" and not sharded else "dynamic"), None
    if mode == "compiled" and (device.type != "cuda" or sharded):
        why = "the weights are FSDP-sharded" if sharded else f"the model is on {device.type}, not a CUDA GPU"
        return "static", f'engine.generation = "compiled" needs CUDA graphs and {why}: sampling with the static cache, uncompiled'
    return mode, None


def bucket_rows(rows: int) -> int:
    return 1 << (rows - 1).bit_length()


def bucket_slots(slots: int) -> int:
    return -(-slots // SLOT_BUCKET) * SLOT_BUCKET


def positions_of(attention: torch.Tensor) -> torch.Tensor:
    """Each token's position in its own sequence, left padding not counted (pads get 0)."""
    return (attention.cumsum(-1) - 1).clamp(min=0)


def forward_logits(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                   cache: Any, cache_keyword: str) -> tuple[torch.Tensor, Any]:
    """The next token's logits (B, V) after `input_ids`, and the cache holding them."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                **{cache_keyword: cache}, use_cache=True, logits_to_keep=1)  # only the next token's logits
    return out.logits[:, -1, :], getattr(out, cache_keyword)


def static_step(model: Any, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                cache: Any, cache_keyword: str) -> torch.Tensor:
    """One decode step into a static cache, updated in place: what gets compiled."""
    return forward_logits(model, input_ids, position_ids, attention_mask, cache, cache_keyword)[0]


class DynamicDecoder:
    """transformers' default cache, grown by one slot a token; the mask grows with it, and a
    finished row's new slots are masked."""

    def __init__(self, model: Any, cache_keyword: str):
        self.model, self.cache_keyword = model, cache_keyword
        self.attention: torch.Tensor | None = None
        self.cache: Any = None

    def prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, max_tokens: int) -> torch.Tensor:
        self.attention, self.cache = attention, None
        return self._forward(input_ids)

    def step(self, input_ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        self.attention = torch.cat([self.attention, active.to(self.attention.dtype)[:, None]], dim=1)
        return self._forward(input_ids)

    def end(self) -> None:
        self.attention = self.cache = None  # the batch's KV cache is not kept between batches

    def _forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = positions_of(self.attention)[:, -input_ids.shape[1]:]
        logits, self.cache = forward_logits(self.model, input_ids, positions, self.attention, self.cache, self.cache_keyword)
        return logits


class StaticDecoder:
    """A preallocated cache and a fixed mask per batch; `compile_step` (e.g. `cuda_graphs`)
    compiles the one-token step, None runs it as is."""

    def __init__(self, model: Any, cache_keyword: str, pad_id: int,
                 compile_step: Callable[[Callable], Callable] | None = None):
        self.model, self.cache_keyword, self.pad_id = model, cache_keyword, pad_id
        self.compiled = compile_step is not None
        self._step = compile_step(static_step) if compile_step is not None else static_step
        self._shape: tuple[int, int] | None = None
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.position: torch.Tensor | None = None
        self.batch = 0

    def prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, max_tokens: int) -> torch.Tensor:
        batch, width = input_ids.shape
        rows = bucket_rows(batch)
        self._allocate(rows, bucket_slots(width + max_tokens), input_ids.device)
        ids = torch.full((rows, width), self.pad_id, dtype=input_ids.dtype, device=input_ids.device)
        prompt_mask = torch.zeros((rows, width), dtype=self.mask.dtype, device=input_ids.device)
        ids[:batch], prompt_mask[:batch], prompt_mask[batch:, -1] = input_ids, attention, 1  # fillers: one pad token
        self.mask[:, :width] = prompt_mask  # in place: the graph reads this memory
        self.mask[:, width:] = 1
        positions = positions_of(prompt_mask)
        self.position, self.batch = positions[:, -1:] + 1, batch
        self.cache.reset()
        return static_step(self.model, ids, positions, self.mask, self.cache, self.cache_keyword)[:batch]

    def step(self, input_ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        ids = torch.full((self.mask.shape[0], 1), self.pad_id, dtype=input_ids.dtype, device=input_ids.device)
        ids[: self.batch] = input_ids
        if self.compiled:
            torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs may be overwritten now
        logits = self._step(self.model, ids, self.position, self.mask, self.cache, self.cache_keyword)
        self.position = self.position + 1
        return logits[: self.batch].clone()  # out of the graph's memory before the next replay

    def end(self) -> None:
        """The cache stays allocated for the next batch of this shape (see the module's note)."""

    def _allocate(self, rows: int, slots: int, device: torch.device) -> None:
        if self._shape == (rows, slots):
            return
        from transformers import StaticCache

        self._shape, self.cache = (rows, slots), None  # the old cache is freed before the new one exists
        self.cache = StaticCache(config=self.model.config, max_cache_len=slots)
        for layer in getattr(self.cache, "layers", ()):
            store_in_cache_dtypes(layer)
        self.mask = torch.zeros((rows, slots), dtype=torch.long, device=device)
        torch._dynamo.mark_static_address(self.mask)


def store_in_cache_dtypes(layer: Any) -> None:
    """Make a static cache layer take keys and values of different dtypes.

    Under bfloat16 autocast a layer's keys come out of the rotary embedding in float32 (its
    cos and sin are float32) while its values stay bfloat16. transformers up to at least
    5.17 allocates both of a layer's tensors in the keys' dtype, so writing the values fails
    ("index_copy_(): self and source expected to have the same dtype"); later versions
    allocate each in its own. Here each is cast to its tensor's dtype before it is written:
    a no-op where they match, an exact widening where they do not (bfloat16 into float32),
    and attention casts both back to bfloat16 under autocast, so the logits are unchanged."""
    if not hasattr(layer, "lazy_initialization"):  # a cache without lazily allocated layers
        return
    update = layer.update

    def update_in_cache_dtypes(key_states, value_states, *args, **kwargs):
        if not layer.is_initialized:
            layer.lazy_initialization(key_states, value_states)
        return update(key_states.to(layer.keys.dtype), value_states.to(layer.values.dtype), *args, **kwargs)

    layer.update = update_in_cache_dtypes


def cuda_graphs(step: Callable) -> Callable:
    """`step` compiled for CUDA graph replay, one graph per shape (no dynamic shapes)."""
    return torch.compile(step, mode="reduce-overhead", dynamic=False)


def make_decoder(generation: str, model: Any, cache_keyword: str, pad_id: int) -> DynamicDecoder | StaticDecoder:
    """The decoder for a resolved `generation` ("dynamic", "static" or "compiled")."""
    if generation == "dynamic":
        return DynamicDecoder(model, cache_keyword)
    return StaticDecoder(model, cache_keyword, pad_id, cuda_graphs if generation == "compiled" else None)
