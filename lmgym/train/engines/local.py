"""The in-process rollout engine: `LocalEngine`, and `LocalClient`, its `ModelClient`.

`LocalEngine` samples with the trainer's own module, so publishing new weights to it is
free. Its snapshot (asynchronous generation) is a `LocalSnapshot`: a frozen copy of the
module that loads the published weights only at `refresh()`, between batches, since the
trainer changes the module while the snapshot samples.

Environments call `LocalClient.chat()` once per turn per rollout, concurrently. The
client gathers every request made in the same event-loop tick and samples them as one
batch, so a group of rollouts costs one batched generation per turn. Prompts and replies
go through the renderer (`lmgym.train.render`): token-exact continuations of the
conversation, and tool calls read from the sampled text when the environment offers tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from typing import Any

from lmgym.parsers.tool_calls import ToolFormat
from lmgym.train.checkpoint import load_trainable, trainable_state
from lmgym.train.engines.base import RolloutEngine
from lmgym.train.engines.sampling import Sampler, SamplingParams
from lmgym.train.render import Renderer
from lmgym.types import Messages, ModelResponse, Usage


class LocalClient:
    """A `ModelClient` over a sampler: anything with a `tokenizer` and
    `generate(prompts, params) -> [Sample]` (a `Sampler`, or a scripted one in tests);
    `tool_format` reads the model's tool calls (None: replies are plain text);
    `default_max_tokens` caps a reply whose request sets no max_tokens."""

    def __init__(self, sampler: Any, tool_format: ToolFormat | None = None, default_max_tokens: int = 16):
        self.sampler = sampler
        self.default_max_tokens = default_max_tokens
        self.renderer = Renderer(sampler.tokenizer, tool_format)
        self._pending: list[tuple[Messages, Any, Any, asyncio.Future]] = []

    @property
    def template_mismatches(self) -> int:
        return self.renderer.template_mismatches

    def reset(self) -> None:
        """Forget conversation prefixes (between batches)."""
        self.renderer.clear()

    async def chat(self, messages: Messages, *, model: str, sampling: dict[str, Any] | None = None, tools=None) -> ModelResponse:
        future = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((messages, SamplingParams.from_request(sampling, self.default_max_tokens), tools, future))
        return await future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        by_params: dict[Any, list] = {}
        for request in pending:
            by_params.setdefault(request[1], []).append(request)
        for params, requests in by_params.items():
            try:
                prompts = [self.renderer.prompt(messages, tools) for messages, _, tools, _ in requests]
                started = time.perf_counter()
                samples = self.sampler.generate(prompts, params)
                latency = time.perf_counter() - started
            except Exception as exc:  # hand the failure to every waiting rollout
                for *_, future in requests:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, tools, future), prompt, sample in zip(requests, prompts, samples):
                message = self.renderer.reply(prompt, sample.token_ids, sample.text, tools=tools, stop=params.stop)
                usage = Usage(len(prompt), len(sample.token_ids), 1)
                if not future.done():
                    future.set_result(ModelResponse(
                        message, sample.finish_reason, usage, latency,
                        token_ids=sample.token_ids, logprobs=sample.logprobs, prompt_token_ids=prompt,
                    ))

    async def aclose(self) -> None:
        self.reset()


def frozen_copy(model: Any) -> Any:
    """A copy of `model` for sampling only: eval mode, no gradients."""
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


class InProcessEngine(RolloutEngine):
    """What both in-process engines share: a `Sampler` on `model`, its client, its RNG.
    `generation` is `engine.generation` (`lmgym.train.engines.decoding`)."""

    def __init__(self, model: Any, tokenizer: Any, *, seed: int = 0, max_batch_size: int = 256,
                 tool_format: ToolFormat | None = None, autocast: Any = contextlib.nullcontext, generation: str = "auto"):
        self.seed, self.tool_format, self.autocast, self.generation = seed, tool_format, autocast, generation
        self.sampler = Sampler(model, tokenizer, seed=seed, max_batch_size=max_batch_size, autocast=autocast,
                               generation=generation)
        self._client = LocalClient(self.sampler, tool_format)

    @property
    def client(self) -> LocalClient:
        return self._client

    @property
    def model(self) -> Any:
        return self.sampler.model

    def refresh(self) -> None:
        self._client.reset()

    def rng_state(self) -> Any:
        return self.sampler.generator.get_state()

    def set_rng_state(self, state: Any) -> None:
        if state is not None:
            self.sampler.generator.set_state(state)

    def close(self) -> None:
        self._client.reset()


class LocalEngine(InProcessEngine):
    """Rollouts sampled in this process with `model` itself (the trainer's module)."""

    def __init__(self, model: Any, tokenizer: Any, *, seed: int = 0, max_batch_size: int = 256,
                 tool_format: ToolFormat | None = None, autocast: Any = contextlib.nullcontext, generation: str = "auto"):
        super().__init__(model, tokenizer, seed=seed, max_batch_size=max_batch_size, tool_format=tool_format,
                         autocast=autocast, generation=generation)
        self._snapshots: list[LocalSnapshot] = []

    def publish(self, model: Any, version: int) -> None:
        """Free here: the engine samples with `model` itself. Its snapshots get a copy."""
        if model is not self.model:
            raise ValueError("the in-process engine samples with the module it was built on: publish that module")
        for snapshot in self._snapshots:
            snapshot.publish(model, version)

    def snapshot(self) -> LocalSnapshot:
        """A frozen copy of the current weights, sampling with its own seed (seed + 1)."""
        snapshot = LocalSnapshot(frozen_copy(self.model), self.sampler.tokenizer, seed=self.seed + 1, origin=self,
                                 tool_format=self.tool_format, autocast=self.autocast, generation=self.generation)
        self._snapshots.append(snapshot)
        return snapshot

    def close(self) -> None:
        for snapshot in list(self._snapshots):
            snapshot.close()
        super().close()


class LocalSnapshot(InProcessEngine):
    """An in-process engine on its own copy of the weights: what is published to it (or to
    the engine it was taken from) is copied at once, on the publisher's thread, and loaded
    at the next `refresh()`, on the sampling thread, so no batch mixes two versions. Its
    weights change only there, so it is its own snapshot."""

    def __init__(self, model: Any, tokenizer: Any, *, seed: int = 0, origin: LocalEngine | None = None,
                 tool_format: ToolFormat | None = None, autocast: Any = contextlib.nullcontext, generation: str = "auto"):
        super().__init__(model, tokenizer, seed=seed, tool_format=tool_format, autocast=autocast, generation=generation)
        self._origin = origin
        self._lock = threading.Lock()
        self._staged: dict[str, Any] | None = None

    def publish(self, model: Any, version: int) -> None:
        weights = trainable_state(model)
        with self._lock:
            self._staged = weights

    def refresh(self) -> None:
        with self._lock:
            staged, self._staged = self._staged, None
        if staged is not None:
            load_trainable(self.model, staged)
        super().refresh()

    def close(self) -> None:
        if self._origin is not None and self in self._origin._snapshots:
            self._origin._snapshots.remove(self)
        self._staged = None
        super().close()
