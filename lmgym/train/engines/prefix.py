"""`Conversations`: token-exact prompts for the turns of a conversation an engine sampled.

Both rollout clients (in process and vLLM) render the chat template themselves, so that
what the trainer sees is what the sampler produced. When a request continues a
conversation whose last assistant message this client returned, its prompt is the
previous prompt + the sampled ids + the template's continuation
(`lmgym.train.tokens.continuation_ids`); earlier turns are never re-tokenised. When the
chat template cannot be extended (it rewrites earlier turns), the prompt is rendered
afresh and `template_mismatches` counts it.

A reply is recognised by the identity of the message object the client returned, not by
its text: two rollouts that said the same thing are still two conversations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmgym.train import tokens
from lmgym.types import Message, Messages


@dataclass
class _Prefix:
    message: Message  # the assistant message object the client returned
    ids: list[int]  # prompt + sampled completion ids, exactly
    text: str  # the decoded sampled completion (special tokens kept)


class Conversations:
    """The sampled prefixes of the conversations in flight, keyed by their last reply."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.template_mismatches = 0
        self._prefixes: dict[int, _Prefix] = {}

    def prompt_for(self, messages: Messages, tools: Any = None) -> list[int]:
        """Token-exact prompt ids for `messages`: the ids of the latest earlier reply this
        client produced, extended by the template's continuation; else rendered afresh."""
        for n_before in range(len(messages), 0, -1):
            prefix = self._prefixes.get(id(messages[n_before - 1]))
            if prefix is not None and prefix.message is messages[n_before - 1]:
                try:
                    return prefix.ids + tokens.continuation_ids(self.tokenizer, messages, n_before, prefix.text, tools)
                except tokens.TemplateMismatch:
                    self.template_mismatches += 1
                    break
        return tokens.prompt_ids(self.tokenizer, messages, tools)

    def remember(self, message: Message, prompt: list[int], sampled: list[int]) -> None:
        """`message` (returned to a rollout) was sampled as `sampled` after `prompt`."""
        text = self.tokenizer.decode(sampled, skip_special_tokens=False)
        self._prefixes[id(message)] = _Prefix(message, prompt + sampled, text)

    def clear(self) -> None:
        """Forget every conversation (between batches: they are finished)."""
        self._prefixes.clear()
