"""SFT on conversations with tool calls: from `lmgym traces --to sft` output or from an
environment's `sft_examples`, a row the model's chat template cannot render, or whose
tool calls it would silently drop, ends in one `error:` line naming the file or
example, the row and the message; never a jinja traceback, never silent training."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_runner import assert_one_error  # noqa: E402  (tests/cli_runner.py)
from cli_runner import invoke as lmgym
from paths import ROOT
from tiny_tools import save_tool_model, tool_tokenizer  # noqa: E402  (tests/tiny_tools.py)

from lmgym.errors import DatasetError  # noqa: E402
from lmgym.train.models import load_model, save_model  # noqa: E402
from lmgym.train.sft import run_sft  # noqa: E402

CONFIG = str(ROOT / "configs" / "reverse-digits.toml")
TRACES = ROOT / "tests" / "fixtures" / "traces"
QUICK = ["--sft.max_steps", "1", "--sft.batch_size", "4", "--logging.console_every", "0"]

# ChatML as many hub templates write it: the content is concatenated, so a tool-call
# reply (content null or absent) makes jinja raise.
STRICT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# ChatML that renders `content or ''` and nothing of tool calls: a call would be learnt
# as an empty reply.
DROPPING_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# A template that renders tool calls as text.
TOOL_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') }}"
    "{%- for call in message.tool_calls or [] %}{{- 'call ' + call.function.name + ' ' + call.function.arguments }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
TOOL_ROW = {
    "prompt": [{"role": "user", "content": "add 2 and 3"}],
    "completion": [{"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}],
}


def model_with_template(path: Path, template: str) -> Path:
    model, tokenizer = load_model("tiny-llama")
    tokenizer.chat_template = template
    return save_model(model, tokenizer, path)


@pytest.fixture(scope="module")
def traces_sft(tmp_path_factory) -> Path:
    """`lmgym traces --to sft` on the recorded fixture traces; row 1 is a reply that calls get_weather."""
    out = tmp_path_factory.mktemp("traces") / "sft.jsonl"
    result = lmgym("traces", str(TRACES), "--to", "sft", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[1]["completion"][0]["tool_calls"][0]["function"]["name"] == "get_weather"
    return out


def test_traces_with_a_tool_call_and_a_template_that_drops_it(traces_sft, tmp_path):
    model_dir = model_with_template(tmp_path / "dropping", DROPPING_TEMPLATE)
    run = tmp_path / "run"
    result = lmgym("sft", CONFIG, *QUICK, "--model.name", str(model_dir), "--sft.data", str(traces_sft),
                   "--logging.output_dir", str(run))
    assert_one_error(result, f"{traces_sft} row 1", "message 2 (assistant, tool calls: get_weather, content null)",
                     "renders no tool calls", 'model.chat_template = "chatml-tools"')
    assert not (run / "final").exists()


def test_traces_with_tool_calls_train_as_they_are(traces_sft, tmp_path):
    # chatml-tools renders the calls and each row's own tool schemas.
    run = tmp_path / "run"
    result = lmgym("sft", CONFIG, *QUICK, "--model.name", str(save_tool_model(tmp_path / "model")),
                   "--sft.data", str(traces_sft), "--logging.output_dir", str(run))
    assert result.exit_code == 0, result.output
    assert (run / "final").is_dir()


def test_only_the_assistant_messages_of_a_completion_train_and_tools_are_rendered():
    from lmgym.train.sft import sft_sample

    tokenizer = tool_tokenizer()
    completion = [
        {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "toolresult"},
        {"role": "assistant", "content": "five"},
    ]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}]
    sample = sft_sample(tokenizer, TOOL_ROW["prompt"], completion, 2048, tools=tools)
    trained = tokenizer.decode([t for t, m in zip(sample.input_ids, sample.loss_mask) if m])
    untrained = tokenizer.decode([t for t, m in zip(sample.input_ids, sample.loss_mask) if not m])
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>' in trained and "five" in trained
    assert "toolresult" not in trained and "toolresult" in untrained
    assert '"name": "add"' in untrained.split("<|im_start|>user")[0]  # the schema, in the system message


def test_traces_with_a_tool_call_and_a_template_that_cannot_render_it(traces_sft, tmp_path):
    model_dir = model_with_template(tmp_path / "strict", STRICT_TEMPLATE)
    result = lmgym("sft", CONFIG, *QUICK, "--model.name", str(model_dir), "--sft.data", str(traces_sft),
                   "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, f"{traces_sft} row 1", "message 2 (assistant, tool calls: get_weather, content null)",
                     "cannot be rendered by the model's chat template")


ENV_MODULE = '''
from lmgym.envs.base import Environment

CALL = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}


def examples(seed=0):
    plain = {"prompt": [{"role": "user", "content": "12"}], "completion": [{"role": "assistant", "content": "21"}]}
    calling = {"messages": [
        {"role": "user", "content": "add 2 and 3"},
        {"role": "assistant", "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
        {"role": "assistant", "content": "5"},
    ]}
    return [plain, plain, calling]


def load_environment():
    return Environment(dataset=[{"question": "12", "answer": "21"}] * 4, sft_examples=examples)
'''


def test_environment_sft_examples_with_a_tool_call(tmp_path, monkeypatch):
    # The call is in the prompt part (the reply after the tool result is learnt); a
    # template that cannot render a message without content must say which one.
    folder = tmp_path / "environments" / "tool-sft"
    folder.mkdir(parents=True)
    (folder / "tool_sft.py").write_text(textwrap.dedent(ENV_MODULE))
    model_dir = model_with_template(tmp_path / "strict", STRICT_TEMPLATE)
    monkeypatch.chdir(tmp_path)
    result = lmgym("sft", CONFIG, *QUICK, "--env.name", "tool-sft", "--env.args", "{}", "--model.name", str(model_dir),
                   "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, "tool-sft sft_examples row 2", "message 1 (assistant, tool calls: add, no content)",
                     "cannot be rendered")
    dropping = model_with_template(tmp_path / "dropping", DROPPING_TEMPLATE)
    result = lmgym("sft", CONFIG, *QUICK, "--env.name", "tool-sft", "--env.args", "{}", "--model.name", str(dropping),
                   "--logging.output_dir", str(tmp_path / "run2"))
    assert_one_error(result, "tool-sft sft_examples row 2", "message 1 (assistant, tool calls: add, no content)",
                     "renders no tool calls")
    result = lmgym("sft", CONFIG, *QUICK, "--env.name", "tool-sft", "--env.args", "{}",
                   "--model.name", str(save_tool_model(tmp_path / "model")), "--logging.output_dir", str(tmp_path / "run3"))
    assert result.exit_code == 0, result.output  # chatml-tools renders the call


def test_a_template_that_renders_tool_calls_trains_on_them(tmp_path):
    model, tokenizer = load_model(str(save_tool_model(tmp_path / "model")))
    tokenizer.chat_template = TOOL_TEMPLATE
    metrics = run_sft(model, tokenizer, [TOOL_ROW], lr=1e-3, batch_size=1, epochs=1, max_seq_len=128)
    assert metrics["sft/loss"] > 0
    tokenizer.chat_template = STRICT_TEMPLATE
    with pytest.raises(DatasetError, match=r"SFT data row 0: message 1 \(assistant, tool calls: add, content null\)"):
        run_sft(model, tokenizer, [TOOL_ROW], lr=1e-3, batch_size=1, epochs=1, max_seq_len=128)


def test_a_tool_call_the_tokenizer_cannot_write_is_refused_naming_the_characters(traces_sft, tmp_path):
    # tiny-llama's characters have no braces or quotes: the call would be learnt as <|unk|>s.
    result = lmgym("sft", CONFIG, *QUICK, "--sft.data", str(traces_sft), "--logging.output_dir", str(tmp_path / "run"))
    assert_one_error(result, f"{traces_sft} row 1", "message 2 (assistant, tool calls: get_weather, content null)",
                     "tokenizer cannot write", "{}")
