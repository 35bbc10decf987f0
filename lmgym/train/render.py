"""The renderer: chat messages and tool schemas to token ids, and sampled ids back to a message.

Every training engine (in process, vLLM) talks to environments in chat messages and to
its model in token ids; this module is the one translation between the two, so what the
trainer sees is what the sampler produced:

- **Prompts** render the model's chat template with the environment's tool schemas. When
  a request continues a conversation whose last reply this renderer produced, its prompt
  is that reply's exact ids (prompt + sampled) + the template's continuation
  (`continuation_ids`): earlier turns are never re-tokenised, since decoding and
  re-encoding sampled text can give other ids. When the template cannot be extended (it
  rewrites earlier turns, as Qwen3's drops old reasoning), the prompt is rendered afresh
  and `template_mismatches` counts it (the trainer then splits that rollout per turn).
- **Replies** are read from the sampled ids with the model's tool-call format
  (`lmgym.parsers.tool_calls`) when the environment offered tools, so the environment
  gets `content`, `tool_calls` and `reasoning_content` as a server would give them in
  evaluation. A reply whose calls the template would render differently (other JSON
  spacing) still continues token-exactly: the continuation starts after the sampled
  end-of-turn token.

A reply is recognised by the identity of the message object the renderer returned, not
by its text: two rollouts that said the same thing are still two conversations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from lmgym.parsers.tool_calls import ToolFormat, openai_tool_calls
from lmgym.types import Message, Messages


class TemplateMismatch(ValueError):
    """The chat template re-renders earlier turns differently: no token-exact extension."""


def render(tokenizer: Any, messages: Messages, *, add_generation_prompt: bool, tools: Any = None) -> str:
    kwargs = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
    )


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(tokenizer: Any, messages: Messages, tools: Any = None) -> list[int]:
    """The first prompt of a conversation, rendered with the generation prompt."""
    return encode(tokenizer, render(tokenizer, messages, add_generation_prompt=True, tools=tools))


def continuation_ids(
    tokenizer: Any, messages: Messages, n_before: int, sampled_text: str, tools: Any = None
) -> list[int]:
    """Ids to append after the sampled tokens of `messages[n_before - 1]` (an assistant
    reply whose decoded sampled tokens, special tokens kept, are `sampled_text`) so the
    sequence continues as the template renders `messages` with a generation prompt:
    the template's closing of the reply not already sampled (`reply_closing`), then the
    environment's messages, then the next generation prompt.

    Raises TemplateMismatch when the template does not extend."""
    head = render(tokenizer, messages[: n_before - 1], add_generation_prompt=True, tools=tools)
    before = render(tokenizer, messages[:n_before], add_generation_prompt=False, tools=tools)
    after = render(tokenizer, messages, add_generation_prompt=True, tools=tools)
    if not after.startswith(before):
        raise TemplateMismatch("the chat template renders earlier turns differently once more follow")
    if not before.startswith(head):
        raise TemplateMismatch("the chat template renders the conversation differently once a reply follows")
    closing = reply_closing(before[len(head):], sampled_text, tokenizer.all_special_tokens)
    if closing is None:
        closing = plain_closing(tokenizer, messages[: n_before - 1], tools)
    return encode(tokenizer, closing + after[len(before):])


def reply_closing(rendered: str, sampled: str, special_tokens: Sequence[str]) -> str | None:
    """What the template writes after the sampled text of a reply that ended its turn
    (`rendered` is the template's rendering of the reply, from after the generation
    prompt to the end of its turn): the "\\n" after a sampled `<|im_end|>`. None for a
    reply cut off at a stop string or max_tokens: the template's plain closing follows it."""
    ended_on = next((t for t in special_tokens if t and sampled.endswith(t)), None)
    if ended_on is None:
        return None
    if rendered.startswith(sampled):  # the template writes the reply as sampled
        return rendered[len(sampled):]
    if ended_on not in rendered:
        raise TemplateMismatch(f"the template does not end a reply with the {ended_on!r} the model sampled")
    return rendered[rendered.rindex(ended_on) + len(ended_on):]  # written otherwise (a call's JSON spacing)


SENTINEL = "\x00lmgym-reply\x00"


def plain_closing(tokenizer: Any, history: Messages, tools: Any) -> str:
    """How the template ends a plain text reply after `history` (`<|im_end|>\\n`): what
    follows a reply the model did not end itself."""
    text = render(tokenizer, [*history, {"role": "assistant", "content": SENTINEL}], add_generation_prompt=False, tools=tools)
    if SENTINEL not in text:
        raise TemplateMismatch("the chat template does not write an assistant reply's text verbatim")
    return text[text.rindex(SENTINEL) + len(SENTINEL):]


@dataclass
class _Prefix:
    message: Message  # the assistant message object the renderer returned
    ids: list[int]  # prompt + sampled completion ids, exactly
    text: str  # the decoded sampled completion (special tokens kept)


class Renderer:
    """Prompts and replies for the conversations an engine has in flight."""

    def __init__(self, tokenizer: Any, tool_format: ToolFormat | None = None):
        self.tokenizer = tokenizer
        self.tool_format = tool_format
        self.template_mismatches = 0
        self._prefixes: dict[int, _Prefix] = {}
        self._calls = 0  # tool-call ids are numbered across the renderer's life

    def prompt(self, messages: Messages, tools: Any = None) -> list[int]:
        """Token-exact prompt ids for `messages`: the ids of the latest earlier reply this
        renderer returned, extended by the template's continuation; else rendered afresh."""
        for n_before in range(len(messages), 0, -1):
            prefix = self._prefixes.get(id(messages[n_before - 1]))
            if prefix is not None and prefix.message is messages[n_before - 1]:
                try:
                    return prefix.ids + continuation_ids(self.tokenizer, messages, n_before, prefix.text, tools)
                except TemplateMismatch:
                    self.template_mismatches += 1
                    break
        return prompt_ids(self.tokenizer, messages, tools)

    def reply(self, prompt: list[int], sampled: list[int], text: str, *, tools: Any = None, stop: Sequence[str] = ()) -> Message:
        """The assistant message for `sampled` (ids drawn after `prompt`; `text` is their
        visible text, cut at any stop string), remembered so the next turn continues it.
        With tools offered, its tool calls and reasoning are read with the tool format."""
        raw = self.tokenizer.decode(sampled, skip_special_tokens=False)
        message: Message = {"role": "assistant", "content": text}
        if tools and self.tool_format is not None:
            message = self._parsed(cut_at_stop(raw, stop))
        self._prefixes[id(message)] = _Prefix(message, list(prompt) + list(sampled), raw)
        return message

    def _parsed(self, raw: str) -> Message:
        parsed = self.tool_format.parse(strip_special(raw, self.tokenizer.all_special_tokens, keep=self.tool_format.keeps))
        message: Message = {"role": "assistant", "content": parsed.content or (None if parsed.tool_calls else "")}
        if parsed.tool_calls:
            message["tool_calls"] = openai_tool_calls(parsed.tool_calls, self._calls + 1)
            self._calls += len(parsed.tool_calls)
        if parsed.reasoning is not None:
            message["reasoning_content"] = parsed.reasoning  # type: ignore[typeddict-unknown-key]
        return message

    def clear(self) -> None:
        """Forget every conversation (between batches: they are finished)."""
        self._prefixes.clear()


def stop_strings(sampling: dict[str, Any] | None) -> tuple[str, ...]:
    """A request's `stop` (a string or a list) as a tuple."""
    stop = (sampling or {}).get("stop") or ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop string (servers leave the stop string out of the reply)."""
    cut = min((text.index(s) for s in stop if s and s in text), default=len(text))
    return text[:cut]


def strip_special(text: str, special_tokens: Sequence[str], keep: Sequence[str] = ()) -> str:
    """`text` without the tokenizer's special tokens (end of turn, padding), except those
    in `keep` (a tool format's markers that are special tokens, as Mistral's `[TOOL_CALLS]`)."""
    for token in special_tokens:
        if token and token not in keep:
            text = text.replace(token, "")
    return text
