"""Tool-call formats read a sampled reply into the calls an environment receives, and a
call they cannot read still reaches the environment (as a bad call), never a crash."""

from __future__ import annotations

import json

import pytest

from lmgym.parsers.tool_calls import FORMATS, detect_tool_format, openai_tool_calls, tool_format


def calls(reply):
    return [(c.name, json.loads(c.arguments) if c.readable else c.arguments, c.readable) for c in reply.tool_calls]


def test_hermes_reads_each_block_and_the_text_before_them():
    text = 'Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>\n<tool_call>{"name":"mul","arguments":{"a":4}}</tool_call>'
    reply = tool_format("hermes").parse(text)
    assert reply.content == "Let me check."
    assert calls(reply) == [("add", {"a": 2, "b": 3}, True), ("mul", {"a": 4}, True)]


def test_hermes_without_a_call_is_plain_text():
    reply = tool_format("hermes").parse("The answer is 5.")
    assert (reply.content, reply.tool_calls, reply.reasoning) == ("The answer is 5.", [], None)


@pytest.mark.parametrize("text, name, raw", [
    ('<tool_call>{"name": "add", "arguments": {"a": 2,}}</tool_call>', "add", '{"name": "add", "arguments": {"a": 2,}}'),
    ('<tool_call>\n{"name": "add", "arguments": {"a": 2', "add", '{"name": "add", "arguments": {"a": 2'),  # cut off
    ("<tool_call>add(2, 3)</tool_call>", "", "add(2, 3)"),
])
def test_hermes_keeps_a_call_it_cannot_read_with_its_raw_text(text, name, raw):
    [(got_name, got_arguments, readable)] = calls(tool_format("hermes").parse(text))
    assert (got_name, got_arguments, readable) == (name, raw, False)


def test_hermes_call_cut_before_its_closing_tag_is_unreadable_even_if_its_json_is_whole():
    [call] = tool_format("hermes").parse('<tool_call>\n{"name": "add", "arguments": {"a": 2}}').tool_calls
    assert not call.readable


def test_arguments_written_as_a_json_string_are_read():
    [call] = tool_format("hermes").parse('<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>').tool_calls
    assert call.readable and json.loads(call.arguments) == {"a": 1}


def test_qwen3_moves_the_think_block_to_reasoning():
    reply = tool_format("qwen3").parse('<think>\nI need the tool.\n</think>\n\n<tool_call>\n{"name": "add", "arguments": {}}\n</tool_call>')
    assert reply.reasoning == "I need the tool." and reply.content == ""
    assert calls(reply) == [("add", {}, True)]
    unfinished = tool_format("qwen3").parse("<think>still thinking")
    assert (unfinished.reasoning, unfinished.content) == ("still thinking", "")


def test_llama3_reads_json_calls_with_or_without_the_python_tag():
    fmt = tool_format("llama3")
    assert calls(fmt.parse('{"name": "add", "parameters": {"a": 1}}')) == [("add", {"a": 1}, True)]
    assert calls(fmt.parse('<|python_tag|>{"name": "add", "parameters": {"a": 1}}; {"name": "mul", "parameters": {"b": 2}}')) == [
        ("add", {"a": 1}, True), ("mul", {"b": 2}, True)]
    plain = fmt.parse('{"answer": 5}')  # a JSON answer is not a call
    assert plain.tool_calls == [] and plain.content == '{"answer": 5}'
    [(name, _, readable)] = calls(fmt.parse('{"name": "add", "parameters": {"a": '))
    assert (name, readable) == ("add", False)


def test_mistral_reads_both_generations_of_its_format():
    fmt = tool_format("mistral")
    assert calls(fmt.parse('[TOOL_CALLS][{"name": "add", "arguments": {"a": 1}}, {"name": "mul", "arguments": {}}]')) == [
        ("add", {"a": 1}, True), ("mul", {}, True)]
    assert calls(fmt.parse('[TOOL_CALLS]add[ARGS]{"a": 1}[TOOL_CALLS]mul[ARGS]{}')) == [("add", {"a": 1}, True), ("mul", {}, True)]
    [(name, raw, readable)] = calls(fmt.parse("[TOOL_CALLS]add[ARGS]{broken"))
    assert (name, raw, readable) == ("add", "{broken", False)


def test_formats_are_detected_from_the_markers_a_template_writes():
    assert detect_tool_format("... <tool_call> ...").name == "hermes"
    assert detect_tool_format("<think> ... <tool_call> ...").name == "qwen3"
    assert detect_tool_format("... [TOOL_CALLS] ...").name == "mistral"
    assert detect_tool_format("... <|python_tag|> ...").name == "llama3"
    assert detect_tool_format("{{ message['content'] }}") is None and detect_tool_format(None) is None


def test_an_unknown_format_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown tool format 'json'; known: hermes, qwen3, llama3, mistral"):
        tool_format("json")
    assert set(FORMATS) == {"hermes", "qwen3", "llama3", "mistral"}


def test_openai_calls_get_nine_character_ids_numbered_on():
    parsed = tool_format("hermes").parse('<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>')
    out = openai_tool_calls(parsed.tool_calls, 7)
    assert [c["id"] for c in out] == ["call00007", "call00008"] and all(len(c["id"]) == 9 for c in out)
    assert out[1] == {"id": "call00008", "type": "function", "function": {"name": "b", "arguments": "{}"}}
