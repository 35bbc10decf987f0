"""`lmgym check-template` and the check before a tool environment trains: templates
written for lmgym reproduce what hub templates do (drop earlier reasoning, render no
tools), and each is reported with the case and the first token that differs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from cli_runner import assert_one_error  # noqa: E402  (tests/cli_runner.py)
from cli_runner import invoke as lmgym
from paths import ROOT
from tiny_tools import save_tool_model

from lmgym.parsers.tool_calls import tool_format  # noqa: E402
from lmgym.train.chat_templates import chatml_tools  # noqa: E402
from lmgym.train.models import char_tokenizer, load_model, save_model  # noqa: E402
from lmgym.train.template_check import CASES, check_case, check_template, tool_support_problems  # noqa: E402

# Reasoning as Qwen3-style templates treat it: a think block is written only for the
# assistant turns after the last user message, so a new user turn erases the old ones.
DROPS_REASONING = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' and message['reasoning_content'] is defined and loop.index0 > ns.last_user %}"
    "{{- '<think>' + message['reasoning_content'] + '</think>' }}"
    "{%- endif %}"
    "{{- (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# A system prompt that changes once tool results are in the conversation (some templates
# announce the tools in use, or move the schemas, once a call was made).
SYSTEM_CHANGES_WITH_TOOL_RESULTS = (
    "{%- set ns = namespace(used=false) %}"
    "{%- for message in messages %}{%- if message['role'] == 'tool' %}{%- set ns.used = true %}{%- endif %}{%- endfor %}"
    "{{- '<|im_start|>system\\n' + ('tools were used' if ns.used else 'no tools yet') + '<|im_end|>\\n' }}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') }}"
    "{%- for call in message['tool_calls'] or [] %}"
    "{{- '<tool_call>{\"name\": ' + call['function']['name'] | tojson + ', \"arguments\": ' + call['function']['arguments'] + '}</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# ChatML that knows nothing of tools.
NO_TOOLS = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def with_template(template: str):
    tokenizer = char_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def by_name(results):
    return {r.name: r for r in results}


def test_lmgym_chatml_tools_keeps_every_case():
    results = check_template(char_tokenizer(), tool_format("hermes"))
    assert [r.name for r in results] == [c.name for c in CASES]
    assert all(r.prefix_ok and r.calls_read_back in (True, None) and not r.detail for r in results), results


def test_a_template_that_drops_earlier_reasoning_fails_that_case_at_the_think_token():
    results = by_name(check_template(with_template(DROPS_REASONING), None))
    reasoning = results["reasoning"]
    assert not reasoning.prefix_ok
    # message 1 is the first reply; once the next user turn follows, its think block is gone
    assert reasoning.detail.startswith("after message 1 (the later turns): token ")
    assert "'<' became '4'" in reasoning.detail  # '<think>' was rendered, now the answer '4' is
    assert results["plain turns"].prefix_ok and results["system prompt"].prefix_ok


def test_a_system_prompt_that_changes_once_tools_were_used_breaks_the_tool_cases():
    results = by_name(check_template(with_template(SYSTEM_CHANGES_WITH_TOOL_RESULTS), tool_format("hermes")))
    assert results["plain turns"].prefix_ok
    one = results["one tool call"]
    assert not one.prefix_ok and one.detail.startswith("after message 1 (the later turns): token ")
    assert "'n' became 't'" in one.detail  # "no tools yet" became "tools were used"


def test_a_template_without_tools_says_what_it_lacks():
    problems = tool_support_problems(with_template(NO_TOOLS), None)
    assert problems == [
        "its chat template does not render the tool schemas",
        "its chat template does not render an assistant's tool calls",
    ]
    result = check_case(with_template(NO_TOOLS), next(c for c in CASES if c.name == "one tool call"), tool_format("hermes"))
    assert result.calls_read_back is False and "hermes reads as []" in result.detail


def test_calls_in_another_format_than_the_one_configured_are_not_read_back():
    result = by_name(check_template(char_tokenizer(), tool_format("mistral")))["one tool call"]
    assert result.prefix_ok and result.calls_read_back is False and "mistral reads as []" in result.detail


def test_check_template_command_prints_the_table(tmp_path):
    result = lmgym("check-template", "tiny-llama")
    assert result.exit_code == 0, result.output
    assert "tool format hermes" in result.flat and "8 of 8 cases keep the prefix property" in result.flat
    assert "its tokenizer cannot write '\"_{}'" in result.flat  # tiny-llama's characters lack JSON's
    template = tmp_path / "drops.jinja"
    template.write_text(DROPS_REASONING)
    result = lmgym("check-template", "tiny-llama", "--chat-template", str(template))
    assert result.exit_code == 0, result.output
    assert "7 of 8 cases keep the prefix property" in result.flat and "split per turn" in result.flat
    assert "its chat template does not render the tool schemas" in result.flat


def test_check_template_bad_input_is_one_error(tmp_path):
    assert_one_error(lmgym("check-template", str(tmp_path / "missing")), "unknown model", "missing")
    assert_one_error(lmgym("check-template", "tiny-llama", "--chat-template", "nope"),
                     "model.chat_template = 'nope'", "chatml-tools")
    result = lmgym("check-template", "tiny-llama", "--tool-format", "json")
    assert result.exit_code == 2 and "'json' is not one of auto, hermes" in result.flat


def test_a_tool_environment_on_a_template_without_tools_fails_before_the_first_step(tmp_path):
    model, tokenizer = load_model(str(save_tool_model(tmp_path / "tools")))
    tokenizer.chat_template = NO_TOOLS
    model_dir = save_model(model, tokenizer, tmp_path / "no-tools")
    run = tmp_path / "run"
    result = lmgym("train", str(ROOT / "configs" / "calculator-tools.toml"), "--model.name", str(model_dir),
                   "--logging.output_dir", str(run))
    assert_one_error(result, f"model '{model_dir}' cannot train a tool environment",
                     "its chat template does not render the tool schemas", 'model.chat_template = "chatml-tools"', "model.tool_format")
    assert not run.exists()  # nothing was written
    # the setting it names fixes it (SFT only, one step: enough to get past the check)
    result = lmgym("sft", str(ROOT / "configs" / "calculator-tools.toml"), "--model.name", str(model_dir),
                   "--model.chat_template", "chatml-tools", "--sft.max_steps", "1", "--sft.batch_size", "2",
                   "--logging.output_dir", str(tmp_path / "fixed"), "--logging.console_every", "0")
    assert result.exit_code == 0, result.output


def test_chatml_tools_renders_plain_conversations_as_chatml():
    tokenizer = with_template(chatml_tools())
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == with_template(NO_TOOLS).apply_chat_template(messages, tokenize=False)


def test_tiny_llama_on_a_tool_environment_is_refused_for_its_vocabulary(tmp_path):
    result = lmgym("train", str(ROOT / "configs" / "calculator-tools.toml"), "--model.name", "tiny-llama",
                   "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, "model 'tiny-llama' cannot train a tool environment", "its tokenizer cannot write")
