"""`LocalClient`: the in-process engine behind the same `ModelClient` interface as HTTP.

Environments call `chat()` once per turn per rollout, concurrently. The client gathers
every request made in the same event-loop tick and samples them as one batch, so a
group of rollouts costs one batched generation per turn.

It also keeps each rollout token-exact: when a request continues a conversation whose
last assistant message this client produced, the new prompt is the previous prompt +
the sampled ids + the template's continuation (`lmgym.train.tokens.continuation_ids`);
earlier turns are never re-tokenised. When the chat template cannot be extended, the
prompt is rendered afresh and `template_mismatches` counts it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from lmgym.train import tokens  # pure Python; torch is imported only by the engine
from lmgym.types import Message, Messages, ModelResponse, Usage


@dataclass
class _Prefix:
    message: Message  # the assistant message object this client returned
    ids: list[int]  # prompt + sampled completion ids, exactly
    text: str  # the decoded sampled completion (special tokens kept)


class LocalClient:
    def __init__(self, engine: Any):
        self.engine = engine
        self._pending: list[tuple[Messages, Any, Any, asyncio.Future]] = []
        self._prefixes: dict[int, _Prefix] = {}
        self.template_mismatches = 0

    def reset(self) -> None:
        """Forget conversation prefixes (call between training steps)."""
        self._prefixes.clear()

    async def chat(self, messages: Messages, *, model: str, sampling: dict[str, Any] | None = None, tools=None) -> ModelResponse:
        params = self._sampling_params(sampling)
        future = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((messages, params, tools, future))
        return await future

    @staticmethod
    def _sampling_params(sampling):
        from lmgym.train.engine import SamplingParams  # imports torch

        return SamplingParams.from_request(sampling)

    def prompt_for(self, messages: Messages, tools: Any = None) -> list[int]:
        """Token-exact prompt ids for `messages` (see the module docstring)."""
        tokenizer = self.engine.tokenizer
        for n_before in range(len(messages), 0, -1):
            prefix = self._prefixes.get(id(messages[n_before - 1]))
            if prefix is not None and prefix.message is messages[n_before - 1]:
                try:
                    return prefix.ids + tokens.continuation_ids(tokenizer, messages, n_before, prefix.text, tools)
                except tokens.TemplateMismatch:
                    self.template_mismatches += 1
                    break
        return tokens.prompt_ids(tokenizer, messages, tools)

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        by_params: dict[Any, list] = {}
        for request in pending:
            by_params.setdefault(request[1], []).append(request)
        for params, requests in by_params.items():
            try:
                prompts = [self.prompt_for(messages, tools) for messages, _, tools, _ in requests]
                started = time.perf_counter()
                samples = self.engine.generate(prompts, params)
                latency = time.perf_counter() - started
            except Exception as exc:  # hand the failure to every waiting rollout
                for *_, future in requests:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (messages, _, _, future), prompt, sample in zip(requests, prompts, samples):
                message: Message = {"role": "assistant", "content": sample.text}
                full_text = self.engine.tokenizer.decode(sample.token_ids, skip_special_tokens=False)
                self._prefixes[id(message)] = _Prefix(message, prompt + sample.token_ids, full_text)
                usage = Usage(len(prompt), len(sample.token_ids), 1)
                if not future.done():
                    future.set_result(ModelResponse(
                        message, sample.finish_reason, usage, latency,
                        token_ids=sample.token_ids, logprobs=sample.logprobs, prompt_token_ids=prompt,
                    ))

    async def aclose(self) -> None:
        self.reset()
