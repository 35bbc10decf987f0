"""Does a chat template serve training? Tool support, and the prefix property per case.

Training renders each prompt with the model's chat template and continues conversations
token-exactly (`lmgym.train.render`), which needs two things of the template:

- **Tools** (a tool environment): it renders the tool schemas, an assistant's tool calls
  and tool results, and writes the calls in a format lmgym can read back from what the
  model samples. `require_tool_support` refuses a run before its first step otherwise.
- **The prefix property**: the rendering of a conversation up to a reply is a prefix of
  the rendering of the conversation that continues it. Templates break it in known ways
  (dropping earlier reasoning, changing the system prompt once tools appear, reformatting
  calls); training then splits such rollouts per turn and counts them.
  `lmgym check-template` prints which cases hold, with the first differing token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lmgym.errors import UsageError
from lmgym.parsers.tool_calls import ToolFormat
from lmgym.train.render import encode, render, strip_special

PROBE_ARGUMENT, PROBE_RESULT = "probe-argument-7301", "probe-result-7302"
PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "probe_lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}
SECOND_TOOL = {
    "type": "function",
    "function": {
        "name": "probe_count",
        "description": "Count the letters of a word.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}


def call(name: str, word: str, number: int) -> dict[str, Any]:
    return {"id": f"call{number:05d}", "type": "function", "function": {"name": name, "arguments": json.dumps({"word": word})}}


def calling(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def result(number: int, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": f"call{number:05d}", "content": text}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str, reasoning: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return message


@dataclass
class Case:
    name: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


CASES = [
    Case("plain turns", [user("hi"), assistant("hello"), user("how are you?"), assistant("fine")]),
    Case("system prompt", [{"role": "system", "content": "Be brief."}, user("hi"), assistant("hello"), user("bye"), assistant("bye")]),
    Case("one tool call", [user("define cat"), calling(call("probe_lookup", "cat", 1)), result(1, "a small animal"), assistant("A small animal.")], [PROBE_TOOL]),
    Case("several tool calls", [
        user("define cat and count it"), calling(call("probe_lookup", "cat", 1), call("probe_count", "cat", 2)),
        result(1, "a small animal"), result(2, "3"), assistant("A small animal, 3 letters."),
    ], [PROBE_TOOL, SECOND_TOOL]),
    Case("tool call with text", [user("define cat"), calling(call("probe_lookup", "cat", 1), content="Looking it up."), result(1, "a small animal"), assistant("A small animal.")], [PROBE_TOOL]),
    Case("tool results, then the user", [
        user("define cat"), calling(call("probe_lookup", "cat", 1)), result(1, "a small animal"), assistant("A small animal."),
        user("and dog?"), calling(call("probe_lookup", "dog", 2)), result(2, "a loyal animal"), assistant("A loyal animal."),
    ], [PROBE_TOOL]),
    Case("reasoning", [user("2+2?"), assistant("4", reasoning="two and two make four"), user("3+3?"), assistant("6", reasoning="three and three")]),
    Case("system prompt with tools", [
        {"role": "system", "content": "Use tools."}, user("define cat"), calling(call("probe_lookup", "cat", 1)),
        result(1, "a small animal"), assistant("A small animal."),
    ], [PROBE_TOOL]),
]


@dataclass
class CaseResult:
    name: str
    prefix_ok: bool
    calls_read_back: bool | None  # None: no tool calls in the case
    detail: str  # where the prefix property first fails, or why the calls were not read


def check_case(tokenizer: Any, case: Case, tool_format: ToolFormat | None) -> CaseResult:
    try:
        prefix_break = first_prefix_break(tokenizer, case.messages, case.tools)
        has_calls = any(m.get("tool_calls") for m in case.messages)
        problem = calls_problem(tokenizer, case.messages, case.tools, tool_format) if has_calls else None
    except Exception as exc:  # noqa: BLE001 - jinja raises many kinds of errors
        return CaseResult(case.name, False, None, f"cannot render: {type(exc).__name__}: {exc}")
    return CaseResult(case.name, not prefix_break, (problem is None) if has_calls else None, prefix_break or problem or "")


def check_template(tokenizer: Any, tool_format: ToolFormat | None) -> list[CaseResult]:
    return [check_case(tokenizer, case, tool_format) for case in CASES]


def first_prefix_break(tokenizer: Any, messages: list[dict[str, Any]], tools: Any) -> str:
    """"" when each reply's rendering is a prefix of what follows it, else where it fails
    and the first differing token."""
    for n, message in enumerate(messages, start=1):
        if message["role"] != "assistant":
            continue
        pairs = [(render(tokenizer, messages[: n - 1], add_generation_prompt=True, tools=tools),
                  render(tokenizer, messages[:n], add_generation_prompt=False, tools=tools), "its generation prompt")]
        if n < len(messages):
            pairs.append((pairs[0][1], render(tokenizer, messages, add_generation_prompt=False, tools=tools), "the later turns"))
        for shorter, longer, what in pairs:
            if not longer.startswith(shorter):
                return f"after message {n - 1} ({what}): {first_difference(tokenizer, shorter, longer)}"
    return ""


def first_difference(tokenizer: Any, shorter: str, longer: str) -> str:
    """The first token at which two renderings part, as `token 12: '<think>' became '4'`."""
    a, b = encode(tokenizer, shorter), encode(tokenizer, longer)
    index = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    was = tokenizer.decode(a[index : index + 1]) if index < len(a) else "(end)"
    now = tokenizer.decode(b[index : index + 1]) if index < len(b) else "(end)"
    return f"token {index}: {was!r} became {now!r}"


def calls_problem(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, tool_format: ToolFormat | None) -> str | None:
    """None when every assistant tool call the template writes is read back by
    `tool_format` as the same name and arguments; else what went wrong."""
    if tool_format is None:
        return "its chat template writes tool calls in no format lmgym reads (set model.tool_format)"
    for n, message in enumerate(messages, start=1):
        if not message.get("tool_calls"):
            continue
        written = written_call(tokenizer, messages[:n], tools, keep=tool_format.keeps)
        parsed = tool_format.parse(written).tool_calls
        expected = [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]]
        got = [(c.name, json.loads(c.arguments) if c.readable else c.arguments) for c in parsed]
        if got != expected:
            return f"message {n - 1}: its chat template writes {written.strip()[:120]!r}, which {tool_format.name} reads as {got}"
    return None


def tool_support_problems(tokenizer: Any, tool_format: ToolFormat | None) -> list[str]:
    """What the template lacks for training a tool environment (empty: nothing)."""
    messages = [user("look it up"), calling(call("probe_lookup", PROBE_ARGUMENT, 1)), result(1, PROBE_RESULT)]
    try:
        text = render(tokenizer, messages, add_generation_prompt=True, tools=[PROBE_TOOL])
    except Exception as exc:  # noqa: BLE001 - jinja raises many kinds of errors
        return [f"its chat template cannot render a tool call and its result ({type(exc).__name__}: {exc})"]
    problems = [
        what for marker, what in [
            ("probe_lookup", "its chat template does not render the tool schemas"),
            (PROBE_ARGUMENT, "its chat template does not render an assistant's tool calls"),
            (PROBE_RESULT, "its chat template does not render tool results"),
        ] if marker not in text
    ]
    if not problems:
        problem = calls_problem(tokenizer, messages[:2], [PROBE_TOOL], tool_format)
        problems += [problem] if problem else []
    unspellable = unspellable_characters(tokenizer, written_call(tokenizer, messages[:2], [PROBE_TOOL]))
    if unspellable:
        problems.append(f"its tokenizer cannot write {''.join(unspellable)!r}, which the tool calls need")
    return problems


def written_call(tokenizer: Any, messages: list[dict[str, Any]], tools: Any, keep: tuple[str, ...] = ()) -> str:
    """The text of the last message (an assistant's tool call) as the template writes it,
    special tokens dropped but those in `keep` (the tool format's markers)."""
    head = render(tokenizer, messages[:-1], add_generation_prompt=True, tools=tools)
    whole = render(tokenizer, messages, add_generation_prompt=False, tools=tools)
    return strip_special(whole[len(head):] if whole.startswith(head) else whole, tokenizer.all_special_tokens, keep)


def unspellable_characters(tokenizer: Any, text: str) -> str:
    """The punctuation of `text` (special tokens aside) that the tokenizer cannot encode:
    a call's braces, quotes and colons. Letters and digits it lacks (a character model's
    capitals) stay the data's business, as in any other text."""
    text = strip_special(text, tokenizer.all_special_tokens)
    return "".join(sorted({ch for ch in text if not ch.isalnum() and tokenizer.decode(encode(tokenizer, ch)) != ch}))


def require_tool_support(tokenizer: Any, tool_format: ToolFormat | None, model_name: str) -> None:
    """A UsageError before the first step when a tool environment would train on a
    template that cannot show the model its tools or read its calls."""
    problems = tool_support_problems(tokenizer, tool_format)
    if problems:
        raise UsageError(
            f"model {model_name!r} cannot train a tool environment: {'; '.join(problems)}. "
            'Set model.chat_template = "chatml-tools" (or a Jinja file that renders tools) and, if its calls '
            'are not Hermes <tool_call> blocks, model.tool_format = "qwen3", "llama3" or "mistral"'
        )
