"""Supervised fine-tuning on chat conversations: the warm start before RL, and distillation.

Rows are `{"prompt": messages, "completion": messages}` or `{"messages": messages}` (then
the completion is the last assistant message). The loss is the mean negative
log-likelihood of the completion tokens only; the prompt is rendered with the chat
template exactly as at sampling time, so SFT and RL see the same token layout.

A row the model's chat template cannot render, or whose tool calls it silently drops
(a reply that calls a tool would be learnt as an empty one), is refused with a message
naming the row, the message and why, before anything trains.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import orjson
import torch

from lmgym.errors import DatasetError
from lmgym.eval.results import read_jsonl
from lmgym.train.metrics import MetricsSink, NullSink
from lmgym.train.render import encode, render
from lmgym.train.template_check import unspellable_characters
from lmgym.train.tokens import TokenSample, pad_batch


def split_row(row: Mapping[str, Any], where: str) -> tuple[list, list]:
    """(prompt messages, completion messages) of one SFT row."""
    if not isinstance(row, Mapping):
        raise DatasetError(f"{where}: expected an object with `prompt` and `completion`, or `messages`; found {_preview(row)}")
    if "prompt" in row and "completion" in row:
        prompt, completion = chat_messages(row["prompt"], f"{where} `prompt`"), chat_messages(row["completion"], f"{where} `completion`")
        if not completion:
            raise DatasetError(f"{where}: `completion` is empty; there is nothing to learn")
        return prompt, completion
    if "messages" in row:
        messages = chat_messages(row["messages"], f"{where} `messages`")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            raise DatasetError(f"{where}: `messages` has no assistant message to learn")
        return messages[:last], messages[last : last + 1]
    raise DatasetError(f"{where}: expected `prompt` and `completion`, or `messages`; found the keys {', '.join(map(str, row)) or 'none'}")


def chat_messages(value: Any, where: str) -> list[dict[str, Any]]:
    """`value` as a list of chat messages, each an object with a string `role`."""
    if not isinstance(value, list):
        raise DatasetError(f"{where}: expected a list of chat messages, found {_preview(value)}")
    for message in value:
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise DatasetError(f"{where}: expected chat messages like {{\"role\": \"user\", \"content\": \"...\"}}, found {_preview(message)}")
    return [dict(m) for m in value]


def _preview(value: Any) -> str:
    text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def sft_sample(
    tokenizer: Any, prompt: list, completion: list, max_seq_len: int, where: str = "SFT row", tools: Any = None
) -> TokenSample:
    """The conversation's ids as the template renders them (with `tools`' schemas), the
    assistant messages of the completion trained (mask 1) and everything else not: the
    prompt, and the tool results and other messages between the replies."""
    messages = [*prompt, *completion]
    try:
        full_text = render(tokenizer, messages, add_generation_prompt=False, tools=tools)
    except Exception as exc:  # noqa: BLE001 - jinja raises TemplateError, TypeError, ... for messages it cannot render
        raise DatasetError(f"{where}: {unrenderable(tokenizer, messages, exc, tools)}") from None
    dropped = first_dropped_tool_calls(tokenizer, messages, full_text, tools)
    if dropped is not None:
        raise DatasetError(
            f"{where}: message {dropped} ({describe(messages[dropped])}): the model's chat template renders no tool "
            f"calls, so this row would be learnt without them; set model.chat_template = \"chatml-tools\" (or a "
            f"template that renders tool calls), or leave rows with tool calls out for this model"
        )
    ids, mask, done = [], [], ""
    for i in range(len(prompt), len(messages)):
        if messages[i].get("role") != "assistant":
            continue
        asked = render(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)
        answered = render(tokenizer, messages[: i + 1], add_generation_prompt=False, tools=tools)
        if not asked.startswith(done) or not answered.startswith(asked):
            raise DatasetError(f"{where}: the chat template does not render message {i} (the assistant's) after the generation prompt")
        if messages[i].get("tool_calls") and (missing := unspellable_characters(tokenizer, answered[len(asked):])):
            raise DatasetError(
                f"{where}: message {i} ({describe(messages[i])}): the model's tokenizer cannot write {missing!r}, "
                f"so this tool call would be learnt as unknown tokens; use a model whose vocabulary has them"
            )
        for text, trained in ((asked[len(done):], 0), (answered[len(asked):], 1)):
            piece = encode(tokenizer, text)
            ids += piece
            mask += [trained] * len(piece)
        done = answered
    if not mask:
        raise DatasetError(f"{where}: the completion has no assistant message to learn")
    truncated = len(ids) > max_seq_len
    return TokenSample(ids[:max_seq_len], mask[:max_seq_len], [0.0] * min(len(ids), max_seq_len), truncated=truncated)


def row_tools(row: Mapping[str, Any], where: str) -> list[dict[str, Any]] | None:
    """A row's tool schemas: a list, or its JSON text (as `lmgym traces --to sft` writes it)."""
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = orjson.loads(tools)
        except orjson.JSONDecodeError:
            raise DatasetError(f"{where}: `tools` is not valid JSON: {tools[:60]!r}") from None
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, Mapping) for t in tools)):
        raise DatasetError(f"{where}: `tools` must be a list of tool schemas, found {_preview(tools)}")
    return tools or None


def unrenderable(tokenizer: Any, messages: list[dict[str, Any]], error: Exception, tools: Any = None) -> str:
    """Which message the template fails on (the first prefix that does not render) and why."""
    reason = f"{type(error).__name__}: {error}"
    for end in range(1, len(messages) + 1):
        try:
            render(tokenizer, messages[:end], add_generation_prompt=False, tools=tools)
        except Exception as exc:  # noqa: BLE001 - as in sft_sample
            return f"message {end - 1} ({describe(messages[end - 1])}) cannot be rendered by the model's chat template ({type(exc).__name__}: {exc})"
    return f"the model's chat template cannot render these messages ({reason})"


def first_dropped_tool_calls(tokenizer: Any, messages: list[dict[str, Any]], rendered: str, tools: Any = None) -> int | None:
    """Index of the first message whose tool calls leave no trace in the rendering (the
    conversation renders the same without them), or None."""
    for i, message in enumerate(messages):
        if message.get("tool_calls"):
            without = [*messages[:i], {k: v for k, v in message.items() if k != "tool_calls"}, *messages[i + 1 :]]
            try:
                same = render(tokenizer, without, add_generation_prompt=False, tools=tools) == rendered
            except Exception:  # noqa: BLE001 - a template that cannot do without the calls renders them
                same = False
            if same:
                return i
    return None


def describe(message: dict[str, Any]) -> str:
    """`assistant, tool calls: add, content null`: what a reader needs to find the message."""
    parts = [str(message.get("role"))]
    calls = message.get("tool_calls")
    if calls:
        parts.append("tool calls: " + ", ".join(_call_name(c) for c in (calls if isinstance(calls, list) else [calls])))
    if "content" not in message:
        parts.append("no content")
    elif message["content"] is None:
        parts.append("content null")
    elif not isinstance(message["content"], str):
        parts.append(f"content {_preview(message['content'])}")
    return ", ".join(parts)


def _call_name(call: Any) -> str:
    function = call.get("function") if isinstance(call, Mapping) else None
    return str(function.get("name")) if isinstance(function, Mapping) else _preview(call)


def nll_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood over the completion tokens of the batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    mask = batch["loss_mask"][:, 1:]  # (B, T-1)
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def run_sft(
    model: Any,
    tokenizer: Any,
    rows: Iterable[Mapping[str, Any]],
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    max_seq_len: int,
    max_steps: int | None = None,
    seed: int = 0,
    sink: MetricsSink | None = None,
    source: str = "SFT data",
    tools: Any = None,
) -> dict[str, float]:
    """Fine-tune `model` in place; logs `sft/loss` per SFT step and returns the last metrics.
    Rows render with their own `tools` (as `lmgym traces --to sft` writes them), else with
    `tools` (the environment's), so the model learns its calls seeing the schemas it will
    be prompted with."""
    sink = sink or NullSink()
    samples = []
    for i, row in enumerate(rows):
        where = f"{source} row {i}"
        samples.append(sft_sample(tokenizer, *split_row(row, where), max_seq_len, where, row_tools(row, where) or tools))
    if not samples:
        raise DatasetError(f"{source} is empty")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    device = next(model.parameters()).device
    model.train()
    metrics: dict[str, float] = {}
    for step, (epoch, chunk) in enumerate(shuffled_batches(samples, batch_size, epochs, seed), start=1):
        loss = nll_loss(model, pad_batch(chunk, pad_id, device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        metrics = {"sft/loss": loss.item(), "sft/epoch": float(epoch)}
        sink.log(step, metrics, phase="sft")
        if max_steps is not None and step >= max_steps:
            break
    model.zero_grad(set_to_none=True)  # no stale gradients for whatever trains next
    return metrics


def shuffled_batches(samples: Sequence[TokenSample], batch_size: int, epochs: int, seed: int):
    """(epoch, batch) pairs: each epoch a new seeded order."""
    rng = random.Random(seed)
    for epoch in range(epochs):
        order = list(range(len(samples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            yield epoch, [samples[i] for i in order[start : start + batch_size]]


def sft_rows(data: str | None, env: Any, seed: int) -> Sequence[Mapping[str, Any]]:
    """Rows from a .jsonl file, or the environment's own warm-start data
    (`Environment(sft_examples=...)`, e.g. `reverse-digits`' noisy teacher)."""
    if data is not None:
        path = Path(data)
        if not path.exists():
            raise DatasetError(f"sft.data = {data!r}: no such file")
        if not path.is_file():
            raise DatasetError(f"sft.data = {data!r}: cannot be read (not a file: SFT data is one .jsonl file)")
        return read_jsonl(path, live=False, error=DatasetError)
    if env.sft_examples is None:
        raise DatasetError("no SFT data: set sft.data to a .jsonl file (this environment generates none)")
    return env.sft_examples(seed=seed)
