"""The renderer through the in-process engine's client, on a real `ToolEnv`: the model's
sampled tool calls reach the environment as calls, tools run, and the rollout stays one
token-exact sequence, however the model spaced its JSON or wherever it was cut off.

A scripted sampler (real tokenizer, fixed replies) stands in for the model, so every id
of the assembled sequence can be checked."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from local_rollouts import PromptedSampler  # noqa: E402  (tests/local_rollouts.py)

from lmgym.envs import ToolEnv  # noqa: E402
from lmgym.parsers.tool_calls import tool_format  # noqa: E402
from lmgym.train.engines.local import LocalClient  # noqa: E402
from lmgym.train.models import TOOL_ALPHABET, char_tokenizer  # noqa: E402
from lmgym.train.render import Renderer, TemplateMismatch, encode, render  # noqa: E402
from lmgym.train.tokens import rollout_samples  # noqa: E402


def add(a: int, b: int) -> int:
    """Add two numbers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


def rollout_with(replies, *, fmt="hermes", max_turns=3):
    tokenizer = char_tokenizer(TOOL_ALPHABET)
    env = ToolEnv(eval_dataset=[{"question": "add 2 and 3"}], tools=[add], max_turns=max_turns)
    client = LocalClient(PromptedSampler(tokenizer, lambda _prompt, k: replies[k]), tool_format(fmt) if fmt else None)
    rollout = asyncio.run(env.rollout(client, "local", env.eval_dataset[0]))
    assert rollout.error is None, rollout.error
    return tokenizer, env, client, rollout


CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'


def test_a_sampled_call_runs_the_tool_and_the_rollout_is_one_exact_sequence():
    tokenizer, env, client, rollout = rollout_with([(CALL, "stop"), ("5", "stop")])
    first = rollout.turns[0].assistant
    assert first["content"] is None
    assert first["tool_calls"] == [{"id": "call00001", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]
    assert rollout.completion[1] == {"role": "tool", "tool_call_id": "call00001", "content": "5"}
    assert rollout.state.get("tool_calls", 0) == 1 and rollout.state.get("tool_errors", 0) == 0
    [sample], split = rollout_samples(rollout, max_seq_len=4000)
    assert not split and client.template_mismatches == 0
    # the sequence is the template's rendering of the whole conversation, tools included
    expected = encode(tokenizer, render(tokenizer, rollout.messages, add_generation_prompt=False, tools=env.tools))
    assert sample.input_ids == expected[:-1]  # up to the last sampled <|im_end|>
    eos = tokenizer.eos_token_id
    trained = [t for t, m in zip(sample.input_ids, sample.loss_mask) if m]
    assert trained == [*encode(tokenizer, CALL), eos, *encode(tokenizer, "5"), eos]
    # the schema reached the model: it is in the first prompt
    assert '"name": "add"' in tokenizer.decode(client.sampler.prompts[0])


def test_a_call_spaced_otherwise_than_the_template_writes_it_still_continues_exactly():
    compact = '<tool_call>{"name":"add","arguments":{"a":2,"b":3}}</tool_call>'
    tokenizer, env, client, rollout = rollout_with([(compact, "stop"), ("5", "stop")])
    assert rollout.state.get("tool_calls", 0) == 1 and rollout.completion[1]["content"] == "5"
    [sample], split = rollout_samples(rollout, max_seq_len=4000)
    assert not split and client.template_mismatches == 0
    text = tokenizer.decode(sample.input_ids, skip_special_tokens=False)
    assert compact + "<|im_end|>\n<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n5<|im_end|>" in text  # as sampled


def test_a_call_the_parser_cannot_read_is_answered_as_a_bad_call():
    broken = '<tool_call>\n{"name": "add", "arguments": {"a": 2,}}\n</tool_call>'
    _, _, client, rollout = rollout_with([(broken, "stop"), ("5", "stop")])
    assert rollout.state.get("tool_errors", 0) == 1
    assert "not valid JSON" in rollout.completion[1]["content"]
    [_], split = rollout_samples(rollout, max_seq_len=4000)
    assert not split and client.template_mismatches == 0


def test_a_call_cut_off_by_max_tokens_is_closed_as_the_template_ends_a_turn():
    cut = '<tool_call>\n{"name": "add", "argu'
    tokenizer, _, client, rollout = rollout_with([(cut, "length"), ("5", "stop")])
    assert rollout.state.get("tool_errors", 0) == 1
    [sample], split = rollout_samples(rollout, max_seq_len=4000)
    assert not split and client.template_mismatches == 0
    assert cut + "<|im_end|>\n<|im_start|>tool\n" in tokenizer.decode(sample.input_ids, skip_special_tokens=False)


def test_without_a_tool_format_replies_stay_text():
    _, _, _, rollout = rollout_with([(CALL, "stop")], fmt=None)
    assert rollout.turns[0].assistant == {"role": "assistant", "content": CALL}
    assert rollout.state.get("tool_calls", 0) == 0


def test_replies_are_parsed_only_when_the_environment_offered_tools():
    tokenizer = char_tokenizer(TOOL_ALPHABET)
    renderer = Renderer(tokenizer, tool_format("hermes"))
    ids = encode(tokenizer, CALL) + [tokenizer.eos_token_id]
    assert renderer.reply([], ids, CALL) == {"role": "assistant", "content": CALL}
    assert renderer.reply([], ids, CALL, tools=[{"type": "function"}])["tool_calls"][0]["function"]["name"] == "add"


def test_stop_strings_cut_the_reply_before_it_is_read():
    tokenizer = char_tokenizer(TOOL_ALPHABET)
    renderer = Renderer(tokenizer, tool_format("hermes"))
    text = "done. " + CALL
    message = renderer.reply([], encode(tokenizer, text), "done.", tools=[{}], stop=[" <tool"])
    assert message == {"role": "assistant", "content": "done."}


def test_a_reply_that_ends_on_a_token_the_template_never_writes_is_a_mismatch():
    from lmgym.train.render import reply_closing

    assert reply_closing("hi<|im_end|>\n", "hi<|im_end|>", ["<|im_end|>"]) == "\n"
    assert reply_closing("hi!<|im_end|>\n", "hi<|im_end|>", ["<|im_end|>"]) == "\n"
    assert reply_closing("hi<|im_end|>\n", "hi", ["<|im_end|>"]) is None  # cut off: the plain closing follows
    with pytest.raises(TemplateMismatch, match="'<|pad|>'"):
        reply_closing("hi<|im_end|>\n", "hi<|pad|>", ["<|pad|>", "<|im_end|>"])


def test_several_calls_over_several_turns_never_split():
    replies = [
        ('<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1}}\n</tool_call>', "stop"),
        ('<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"a": 3, "b": 3}}\n</tool_call>', "stop"),
        ("12", "stop"),
    ]
    tokenizer, env, client, rollout = rollout_with(replies, max_turns=4)
    assert rollout.state.get("tool_calls", 0) == 3
    assert [m["content"] for m in rollout.completion if m["role"] == "tool"] == ["2", "4", "6"]
    [sample], split = rollout_samples(rollout, max_seq_len=4000)
    assert not split and client.template_mismatches == 0
    prompts = client.sampler.prompts
    assert all(later[: len(earlier)] == earlier for earlier, later in zip(prompts, prompts[1:]))


def test_the_vllm_client_reads_tool_calls_from_the_sampled_ids_as_the_local_one_does():
    from fake_vllm import FakeVLLM, completion

    from lmgym.train.engines.vllm import VLLMClient

    tokenizer = char_tokenizer(TOOL_ALPHABET)
    replies = [CALL, "5"]

    def serve(path, body):
        text = replies.pop(0)
        ids = encode(tokenizer, text) + [tokenizer.eos_token_id]
        return 200, completion(ids, text=text, prompt=body["prompt"])

    fake = FakeVLLM(serve)
    client = VLLMClient("http://vllm", tokenizer, transport=fake.transport, tool_format=tool_format("hermes"))
    env = ToolEnv(eval_dataset=[{"question": "add 2 and 3"}], tools=[add], max_turns=3)
    rollout = asyncio.run(env.rollout(client, "base", env.eval_dataset[0]))
    assert rollout.error is None and rollout.state["tool_calls"] == 1
    assert rollout.completion[1]["content"] == "5" and rollout.completion[-1]["content"] == "5"
    [sample], split = rollout_samples(rollout, max_seq_len=4000)
    assert not split and client.template_mismatches == 0
    assert fake.calls[1][1]["prompt"][: len(fake.calls[0][1]["prompt"])] == fake.calls[0][1]["prompt"]
