"""Token-exact trajectories of multi-turn tool conversations, and the template fallback.

A scripted engine (real tokenizer, fixed replies) stands in for sampling, so every id
and mask of the assembled sequence can be checked exactly.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from lmgym import MultiTurnEnv  # noqa: E402
from lmgym.train.engines.local import LocalClient  # noqa: E402
from lmgym.train.engines.sampling import Sample  # noqa: E402
from lmgym.train.models import char_tokenizer  # noqa: E402
from lmgym.train.render import encode  # noqa: E402
from lmgym.train.tokens import rollout_samples  # noqa: E402


class ScriptedEngine:
    """Replies with fixed texts, one per call per conversation, ending in <|im_end|>."""

    def __init__(self, tokenizer, replies, finish="stop"):
        self.tokenizer, self.replies, self.finish = tokenizer, list(replies), finish
        self.pad_id = tokenizer.pad_token_id
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts += prompts
        out = []
        for _ in prompts:
            text = self.replies.pop(0)
            ids = encode(self.tokenizer, text) + ([self.tokenizer.eos_token_id] if self.finish == "stop" else [])
            out.append(Sample(ids, [-0.5] * len(ids), self.finish, text))
        return out


class ToolEnv(MultiTurnEnv):
    async def env_response(self, messages, state):
        return [{"role": "tool", "content": f"result {state['turn']}"}]


def run(env, client, example):
    return asyncio.run(env.rollout(client, "local", example))


def test_three_turn_tool_conversation_is_one_exact_sequence():
    tokenizer = char_tokenizer()
    env = ToolEnv(eval_dataset=[{"question": "add 1 2"}], max_turns=3)
    client = LocalClient(ScriptedEngine(tokenizer, ["call add", "call mul", "done 3"]))
    rollout = run(env, client, env.eval_dataset[0])
    [sample], split = rollout_samples(rollout, max_seq_len=1000)
    assert not split and client.template_mismatches == 0
    # The whole conversation as the template renders it; the char tokenizer maps each
    # character (or special token) to one id, so the ids are known exactly.
    messages = rollout.messages[:-1]  # the final tool result follows the last reply; nothing trains on it
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    expected = encode(tokenizer, text)
    assert expected[-1] == encode(tokenizer, "\n")[0]
    assert sample.input_ids == expected[:-1]  # the last reply ends at its sampled <|im_end|>
    # the loss mask is 1 exactly on the sampled replies, each with its end-of-turn token
    trained = [tok for tok, m in zip(sample.input_ids, sample.loss_mask) if m]
    eos = tokenizer.eos_token_id
    assert trained == [*encode(tokenizer, "call add"), eos, *encode(tokenizer, "call mul"), eos, *encode(tokenizer, "done 3"), eos]
    assert [lp for lp, m in zip(sample.sampler_logprobs, sample.loss_mask) if m] == [-0.5] * len(trained)
    assert all(lp == 0.0 for lp, m in zip(sample.sampler_logprobs, sample.loss_mask) if not m)
    # the turn budget ended after the 3rd reply, and the environment still answered it
    assert rollout.state["stop_reason"] == "max_turns"
    assert rollout.completion[-1] == {"role": "tool", "content": "result 3"}
    assert tokenizer.decode(sample.input_ids, skip_special_tokens=False).endswith("done 3<|im_end|>")
    # every later prompt extended the earlier one token for token
    prompts = client.sampler.prompts
    assert prompts[1][: len(prompts[0])] == prompts[0] and prompts[2][: len(prompts[1])] == prompts[1]


def test_template_that_rewrites_earlier_turns_falls_back_to_per_turn_samples():
    tokenizer = char_tokenizer()
    # like templates that strip <think> from earlier replies: older replies are elided
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' and not loop.last %}...{% else %}{{ m.content }}{% endif %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    env = ToolEnv(eval_dataset=[{"question": "q"}], max_turns=2)
    client = LocalClient(ScriptedEngine(tokenizer, ["first", "second"]))
    rollout = run(env, client, env.eval_dataset[0])
    samples, split = rollout_samples(rollout, max_seq_len=1000)
    assert split and client.template_mismatches == 1 and len(samples) == 2
    for sample, turn in zip(samples, rollout.turns):
        assert sample.input_ids == turn.prompt_token_ids + turn.token_ids
        assert sum(sample.loss_mask) == len(turn.token_ids)
    assert "..." in tokenizer.decode(samples[1].input_ids)  # the fresh render of turn 2


def test_truncation_is_marked():
    tokenizer = char_tokenizer()
    env = ToolEnv(eval_dataset=[{"question": "q"}], max_turns=1)
    rollout = run(env, LocalClient(ScriptedEngine(tokenizer, ["abcdef"], finish="length")), env.eval_dataset[0])
    [sample], _ = rollout_samples(rollout, max_seq_len=1000)
    assert sample.truncated  # stopped on max_tokens
    rollout = run(env, LocalClient(ScriptedEngine(tokenizer, ["abcdef"])), env.eval_dataset[0])
    [sample], _ = rollout_samples(rollout, max_seq_len=20)
    assert sample.truncated and len(sample.input_ids) == 20
