"""`RolloutEngine`: what training needs from whatever samples its rollouts, and no more.

The orchestrator runs rollouts through the engine's `client` (a `ModelClient`, so
environments never know they are being trained) and hands it the trainer's weights after
each optimiser step (`publish`). Nothing else crosses between the trainer and the
sampler: the in-process engine and a vLLM server are interchangeable, and a test can
stand in for either by implementing this class.

Asynchronous generation samples on its own thread while the trainer changes the weights,
so it samples from a `snapshot()`: an engine whose weights change only at its
`refresh()`, which the sampling thread calls before each batch. A batch is thus sampled
by one known policy version. An engine whose weights are already its own copy (a server)
is its own snapshot.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lmgym.clients.base import ModelClient


class RolloutEngine(ABC):
    @property
    @abstractmethod
    def client(self) -> ModelClient:
        """The client rollouts call: token ids and sampler logprobs come back on every reply."""

    @abstractmethod
    def publish(self, model: Any, version: int) -> None:
        """Make `model`'s current weights (policy `version`) those new requests sample from,
        and those this engine's snapshots load at their next `refresh()`. Called on the
        trainer's thread after an optimiser step (and after a resume)."""

    def snapshot(self) -> RolloutEngine:
        """An engine for a sampling thread that runs while the trainer trains: it samples
        from weights that change only at its `refresh()`."""
        return self

    def refresh(self) -> None:
        """Before each batch, on the thread that samples it: forget the previous batch's
        conversations and, in a snapshot, load the weights published since."""

    def rng_state(self) -> Any:
        """The sampler's random state, saved with checkpoints so that a resumed run samples
        as an uninterrupted one would; None where the engine keeps its own (a server)."""
        return None

    def set_rng_state(self, state: Any) -> None:
        """Restore what `rng_state` returned (None: nothing was saved)."""

    def close(self) -> None:
        """Release what the engine holds (a server it started). Safe to call twice."""
