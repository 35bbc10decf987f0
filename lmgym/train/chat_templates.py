"""Chat templates lmgym writes for its CPU models, and the `model.chat_template` setting.

`chatml-tools` is ChatML that renders tools: the schemas in the system message, an
assistant's tool calls as Hermes-style `<tool_call>{"name": ..., "arguments": ...}</tool_call>`
blocks (`lmgym.parsers.tool_calls.HermesFormat` reads them back), and tool results as
`tool` turns. Each message renders on its own, after a system message that depends only
on the first message and the tools, so rendering `messages[:k]` is always a prefix of
rendering `messages[:k+1]`: multi-turn training never needs to split a rollout.

Without tools it renders exactly as the template it replaces: plain ChatML for
`tiny-llama`, and for `smollm2` the SmolLM2-Instruct template, which adds SmolLM's
default system message when the conversation has none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmgym.errors import UsageError
from lmgym.parsers.tool_calls import ToolFormat, detect_tool_format, tool_format

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# Short: a character-level model reads every character of it in every prompt.
TOOLS_PREAMBLE = "Tools (JSON schemas):\\n<tools>\\n"
TOOLS_INSTRUCTIONS = '</tools>\\nTo call one, reply with:\\n<tool_call>\\n{\\"name\\": ..., \\"arguments\\": {...}}\\n</tool_call>'


def chatml_tools(default_system: str | None = None) -> str:
    """The `chatml-tools` template; `default_system` is the system message used when the
    conversation has none (SmolLM2's), or None for no system message then."""
    default = "''" if default_system is None else repr(default_system)
    return (
        "{%- if messages and messages[0]['role'] == 'system' %}"
        "{%- set system = messages[0]['content'] or '' %}{%- set start = 1 %}"
        "{%- else %}{%- set system = " + default + " %}{%- set start = 0 %}{%- endif %}"
        "{%- if tools %}"
        "{%- set system = (system + '\\n\\n' if system else '') + '" + TOOLS_PREAMBLE + "' %}"
        "{%- set listed = namespace(text=system) %}"  # a loop's `set` does not outlive the loop
        "{%- for tool in tools %}{%- set listed.text = listed.text + (tool['function'] if tool['function'] is defined else tool) | tojson + '\\n' %}{%- endfor %}"
        "{%- set system = listed.text + '" + TOOLS_INSTRUCTIONS + "' %}"
        "{%- endif %}"
        "{%- if messages and (system or start == 1) %}{{- '<|im_start|>system\\n' + system + '<|im_end|>\\n' }}{%- endif %}"
        "{%- for message in messages[start:] %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') }}"
        "{%- if message['role'] == 'assistant' and message['tool_calls'] is defined and message['tool_calls'] %}"
        "{%- for call in message['tool_calls'] %}"
        "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
        "{%- set arguments = call['function']['arguments'] %}"
        "{{- '<tool_call>\\n{\"name\": ' + call['function']['name'] | tojson + ', \"arguments\": ' }}"
        "{{- (arguments if arguments is string else arguments | tojson) + '}\\n</tool_call>' }}"
        "{%- endfor %}"
        "{%- endif %}"
        "{{- '<|im_end|>\\n' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


BUILT_IN = {"chatml-tools": chatml_tools()}


def resolve_chat_template(setting: str) -> str:
    """`model.chat_template`: a built-in name (`chatml-tools`) or a path to a Jinja file."""
    if setting in BUILT_IN:
        return BUILT_IN[setting]
    path = Path(setting).expanduser()
    if not path.is_file():
        raise UsageError(
            f"model.chat_template = {setting!r}: neither a built-in template ({', '.join(BUILT_IN)}) nor a file"
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"model.chat_template = {setting!r}: cannot be read ({exc})") from None


def configure_tokenizer(tokenizer: Any, chat_template: str | None) -> None:
    """Apply `model.chat_template` (unset: keep the model's own)."""
    if chat_template:
        tokenizer.chat_template = resolve_chat_template(chat_template)


def resolve_tool_format(tokenizer: Any, setting: str) -> ToolFormat | None:
    """`model.tool_format`: a named format, or "auto": the one the chat template writes
    (None when it writes none: the model is then trained without tools)."""
    if setting != "auto":
        return tool_format(setting)
    return detect_tool_format(getattr(tokenizer, "chat_template", None))
