"""Tool rollouts rendered through Llama 3.1-style and Mistral-style chat templates (written
for these tests, tests/fixtures/templates), end to end in the in-process engine: the
sampled calls are read with that family's tool format and run by the environment, their
results reach the next prompt as the template writes them, and the rollout stays one
token-exact sequence. `check_template` reports what each template keeps: the Llama one
every case, the Mistral one none of the cases with a second user message (it moves the
tool list and the system message to the last user message, as Mistral's own templates do)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

pytest.importorskip("torch")

from local_rollouts import PromptedSampler  # noqa: E402  (tests/local_rollouts.py)
from paths import FIXTURES

import lmgym  # noqa: E402
from lmgym.parsers.tool_calls import detect_tool_format, tool_format  # noqa: E402
from lmgym.train.engines.local import LocalClient  # noqa: E402
from lmgym.train.models import TOOL_ALPHABET, char_tokenizer  # noqa: E402
from lmgym.train.render import Renderer, encode, prompt_ids  # noqa: E402
from lmgym.train.template_check import check_template, tool_support_problems  # noqa: E402
from lmgym.train.tokens import rollout_samples  # noqa: E402

# Per family: its end of turn, its start of text, and its other markers (all special
# tokens: the character vocabulary spells neither their capitals nor '|').
FAMILIES = {
    "llama3": ("<|eot_id|>", "<|begin_of_text|>", ["<|start_header_id|>", "<|end_header_id|>"]),
    "mistral": ("</s>", "<s>", ["[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
                                "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]),
}
# How each family's template writes a tool result into the prompt that follows it.
RESULT_IN_PROMPT = {
    "llama3": "<|start_header_id|>ipython<|end_header_id|>\n\n{result}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral": '[TOOL_RESULTS]{{"call_id": "call00001", "content": "{result}"}}[/TOOL_RESULTS]',
}


def family_tokenizer(family: str):
    """The tests' character tokenizer with `family`'s markers and template."""
    eos, bos, markers = FAMILIES[family]
    tokenizer = char_tokenizer(TOOL_ALPHABET)
    tokenizer.add_special_tokens({"eos_token": eos, "bos_token": bos, "additional_special_tokens": markers})
    tokenizer.chat_template = (FIXTURES / "templates" / f"{family}_tools.jinja").read_text(encoding="utf-8")
    return tokenizer


def family_call(family: str, name: str, **arguments) -> str:
    """A tool call as a model of `family` writes it."""
    if family == "llama3":
        return json.dumps({"name": name, "parameters": arguments})
    return "[TOOL_CALLS]" + json.dumps([{"name": name, "arguments": arguments}])


def question(prompt: str) -> str:
    """The product the calculator asks about (`123 * 4567`; its capital W is <|unk|> here)."""
    return re.findall(r"(\d+ \* \d+)\?", prompt)[-1]


def calculator_student(family: str):
    """Calls `calculate` on the question first, then answers with the last number it was shown."""
    def reply(prompt: str, asked: int) -> str:
        if asked == 0:
            return family_call(family, "calculate", expression=question(prompt))
        return "<answer>" + re.findall(r"\d+", prompt)[-1] + "</answer>"
    return reply


def calculator_rollout(family: str):
    """One scored calculator rollout through the in-process client: (rollout, the
    prompts the sampler got as text, whether it was split, the client)."""
    tokenizer = family_tokenizer(family)
    env = lmgym.load_environment("calculator", kind="product", num_examples=4, num_eval_examples=0)
    sampler = PromptedSampler(tokenizer, calculator_student(family))
    client = LocalClient(sampler, tool_format(family))
    rollout = asyncio.run(env.rollout(client, "local", env.dataset[0]))
    asyncio.run(env.score_group([rollout]))
    samples, split = rollout_samples(rollout, max_seq_len=100_000)
    prompts = [tokenizer.decode(p, skip_special_tokens=False) for p in sampler.prompts]
    return rollout, prompts, split, client, samples, tokenizer


@pytest.mark.parametrize("family", ["llama3", "mistral"])
def test_a_tool_rollout_through_the_familys_template_is_one_exact_sequence(family):
    rollout, prompts, split, client, samples, tokenizer = calculator_rollout(family)
    assert rollout.error is None, rollout.error
    assert rollout.metrics["tool_calls"] == 1 and rollout.metrics["tool_errors"] == 0
    assert rollout.metrics["calls_calculate"] == 1
    [first, second] = prompts
    result = next(m for m in rollout.completion if m["role"] == "tool")["content"]
    a, b = question(first).split(" * ")
    assert result == str(int(a) * int(b))  # the environment ran the call read from the sampled text
    assert RESULT_IN_PROMPT[family].format(result=result) in second
    assert second.startswith(first + family_call(family, "calculate", expression=question(first)))
    assert rollout.reward > 1.0  # the right answer, well formed
    assert not split and client.template_mismatches == 0 and len(samples) == 1
    text = tokenizer.decode(samples[0].input_ids, skip_special_tokens=False)
    assert text.startswith(second) and text.endswith(f"<answer>{result}</answer>{FAMILIES[family][0]}")


def test_the_llama_template_keeps_every_case_and_its_calls_read_back():
    tokenizer = family_tokenizer("llama3")
    results = check_template(tokenizer, tool_format("llama3"))
    assert all(r.prefix_ok for r in results), [r for r in results if not r.prefix_ok]
    assert all(r.calls_read_back is not False for r in results)
    assert tool_support_problems(tokenizer, tool_format("llama3")) == []
    assert detect_tool_format(tokenizer.chat_template).name == "llama3"


def test_the_mistral_template_breaks_the_prefix_once_a_second_user_message_comes():
    tokenizer = family_tokenizer("mistral")
    results = check_template(tokenizer, tool_format("mistral"))
    assert {r.name for r in results if not r.prefix_ok} == {"system prompt", "tool results, then the user"}
    moved = next(r for r in results if r.name == "tool results, then the user")
    assert "'[AVAILABLE_TOOLS]' became '[INST]'" in moved.detail
    assert all(r.calls_read_back is not False for r in results)
    assert tool_support_problems(tokenizer, tool_format("mistral")) == []
    assert detect_tool_format(tokenizer.chat_template).name == "mistral"


def test_the_mistral_template_is_rendered_afresh_and_counted_when_a_second_user_message_comes():
    tokenizer = family_tokenizer("mistral")
    tools = [{"type": "function", "function": {"name": "calculate", "parameters": {"type": "object"}}}]
    renderer = Renderer(tokenizer, tool_format("mistral"))
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    prompt = renderer.prompt(history, tools)
    sampled = encode(tokenizer, "hello") + [tokenizer.eos_token_id]
    reply = renderer.reply(prompt, sampled, "hello", tools=tools)
    later = [*history, reply, {"role": "user", "content": "bye"}]
    assert renderer.prompt(later, tools) == prompt_ids(tokenizer, later, tools)
    assert renderer.template_mismatches == 1
