"""Rollouts through the in-process training engine's client with a scripted sampler: the
real tokenizer and renderer, replies chosen from the prompt, so what a training step would
see of a rollout can be checked exactly. (`scripted` does the same over HTTP.)"""

from __future__ import annotations

import asyncio
import json

from tiny_tools import tool_tokenizer

from lmgym.parsers.tool_calls import tool_format
from lmgym.train.engines.local import LocalClient
from lmgym.train.engines.sampling import Sample
from lmgym.train.render import encode
from lmgym.train.tokens import rollout_samples


def hermes_call(name: str, **arguments) -> str:
    """A tool call as a Hermes-format model writes it."""
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


class PromptedSampler:
    """Replies `reply(prompt_text, k)` for the k-th prompt it is asked: a text, ended by
    <|im_end|>, or (text, "length") for a reply cut off there. Keeps the prompts it got."""

    def __init__(self, tokenizer, reply):
        self.tokenizer, self.reply, self.asked, self.prompts = tokenizer, reply, 0, []

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            reply = self.reply(self.tokenizer.decode(prompt, skip_special_tokens=False), self.asked)
            text, finish = (reply, "stop") if isinstance(reply, str) else reply
            self.asked += 1
            self.prompts.append(prompt)
            ids = encode(self.tokenizer, text) + ([self.tokenizer.eos_token_id] if finish == "stop" else [])
            out.append(Sample(ids, [-0.5] * len(ids), finish, text))
        return out


def run_local(env, replies, fmt="hermes", example=None, **kwargs):
    """One scored rollout of `example` (else `env`'s first) through the in-process client,
    `replies` in turn; asserts it is one token-exact sequence and returns it with its text."""
    tokenizer = tool_tokenizer()
    replies = list(replies)
    client = LocalClient(PromptedSampler(tokenizer, lambda prompt, asked: replies[asked]), tool_format(fmt))
    example = example or (env.eval_dataset or env.dataset)[0]
    rollout = asyncio.run(env.rollout(client, "local", example, **kwargs))
    asyncio.run(env.score_group([rollout]))
    assert rollout.error is None, rollout.error
    [sample], split = rollout_samples(rollout, max_seq_len=100_000)
    assert not split and client.template_mismatches == 0
    return rollout, tokenizer.decode(sample.input_ids, skip_special_tokens=False)
