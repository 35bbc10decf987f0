"""Training precision and memory: autocast, float16 loss scaling, gradient checkpointing.

`model.dtype` is the compute precision of the trainer's forward passes, not the weights'.
The weights stay float32 (the master copy) and so does AdamW's state: under
`torch.autocast` matmuls and attention run in bfloat16 or float16 while reductions,
norms and the loss stay float32, and the gradients come back float32. The logprobs that
enter the loss and the importance ratios are float32 too: logits are upcast before the
log-softmax (`lmgym.train.logprobs`). float16's narrow range adds a `GradScaler`: the
loss is scaled up before backward, the gradients unscaled before the clip, and a step
whose gradients overflowed is skipped (its scale is part of the checkpoint).

`trainer.gradient_checkpointing` turns on transformers' own per-layer checkpointing
(non-reentrant): each decoder layer keeps only its input and recomputes the rest in the
backward pass. transformers checkpoints a layer only in training mode, and the trainer's
policy computes in eval mode (dropout off, as the sampler does), so `checkpointed` marks
just the checkpointed layers as training for the trainer's forward pass; the modules
inside them (dropout, attention) keep their mode, so the numbers are the same with or
without checkpointing.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from lmgym.errors import UsageError
from lmgym.train.logprobs import base_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Precision:
    """Autocast for forward passes, and the backward and optimiser step that go with it."""

    def __init__(self, dtype: str, device: torch.device | str):
        if dtype not in DTYPES:
            raise UsageError(f"model.dtype = {dtype!r}: choose one of {', '.join(map(repr, DTYPES))}")
        self.name, self.dtype, self.device_type = dtype, DTYPES[dtype], torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before clipping: the gradients as they would be without loss scaling."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)  # skipped when the gradients overflowed
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


SLOW_FACTOR = 4.0  # a reduced precision this many times slower than float32 is worth a notice


def matmul_slowdown(dtype: torch.dtype, size: int = 128, repeats: int = 5) -> float:
    """How many times longer a `size`-square matmul takes on one core of this CPU in `dtype`
    than in float32: the best of `repeats` each, after one untimed round. One thread, so
    that other busy processes or a pool starting up do not skew one side."""
    pairs = {dt: (torch.randn(size, size).to(dt), torch.randn(size, size).to(dt)) for dt in (torch.float32, dtype)}
    best = dict.fromkeys(pairs, float("inf"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for round_ in range(repeats + 1):
            for dt, (a, b) in pairs.items():
                started = time.perf_counter()
                a @ b
                if round_:  # round 0 warms up
                    best[dt] = min(best[dt], time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return best[dtype] / max(best[torch.float32], 1e-9)


def cpu_precision_notice(dtype: str, device: torch.device | str,
                         slowdown: Callable[[torch.dtype], float] = matmul_slowdown) -> str | None:
    """A one-line notice when `model.dtype` on a CPU makes its matmuls much slower than
    float32, else None. A CPU without native bfloat16/float16 arithmetic (x86 with AVX2
    only, say) emulates it, tens of times slower; with AMX or AVX512-BF16 it is faster."""
    if torch.device(device).type != "cpu" or DTYPES.get(dtype, torch.float32) == torch.float32:
        return None
    factor = slowdown(DTYPES[dtype])
    if factor < SLOW_FACTOR:
        return None
    return (f'model.dtype = "{dtype}": this CPU runs a {dtype} matmul {factor:.0f}× slower than a float32 one '
            f'(no native {dtype} arithmetic); model.dtype = "float32" trains faster here, at twice the activation memory')


def enable_gradient_checkpointing(model: Any) -> None:
    """transformers' per-layer activation checkpointing (non-reentrant) on `model`, or on
    the base model under a LoRA adapter."""
    base = base_model(model)
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise UsageError(f"trainer.gradient_checkpointing: {type(base).__name__} does not support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old name, if that is all this version has
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def checkpointing_enabled(model: Any) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in _checkpoint_layers(model))


def _checkpoint_layers(model: Any) -> list[Any]:
    from transformers.modeling_layers import GradientCheckpointingLayer

    return [m for m in base_model(model).modules() if isinstance(m, GradientCheckpointingLayer)]


@contextlib.contextmanager
def checkpointed(model: Any, enabled: bool) -> Iterator[None]:
    """While a training forward pass runs: the checkpointed layers count as training (only
    they, not their submodules), since transformers checkpoints a layer only then."""
    flipped = [m for m in _checkpoint_layers(model) if m.gradient_checkpointing and not m.training] if enabled else []
    for module in flipped:
        module.training = True
    try:
        yield
    finally:
        for module in flipped:
            module.training = False
