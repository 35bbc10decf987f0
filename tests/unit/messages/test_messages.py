"""lmgym.messages: the text of messages, completions and transcripts, read one way everywhere."""

from __future__ import annotations

from lmgym.messages import (
    assistant_contents,
    completion_text,
    content_text,
    last_assistant_text,
    last_text,
    last_user_text,
    prompt_text,
    render_transcript,
)
from lmgym.testing import tool_call

PARTS = [{"type": "text", "text": "Hello "}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "there"}]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": PARTS},
    {"role": "assistant", "content": None, "tool_calls": [tool_call("add", {"a": 1}, call_id="c1")]},
    {"role": "tool", "tool_call_id": "c1", "content": "2"},
    {"role": "assistant", "content": "It is 2."},
]


def test_content_of_every_shape_reads_as_text():
    assert content_text("plain") == "plain" and content_text(None) == "" and content_text(PARTS) == "Hello there"
    assert content_text(3) == ""


def test_last_messages_by_role():
    assert last_text(CONVERSATION, "user") == "Hello there" and last_text(CONVERSATION, "nobody") == ""
    assert last_assistant_text(CONVERSATION) == "It is 2." and last_assistant_text("raw") == "raw"
    assert last_assistant_text([{"role": "user", "content": "q"}]) is None
    assert last_user_text({"messages": CONVERSATION}) == "Hello there" and last_user_text({}) == ""


def test_completions_leave_out_replies_that_are_only_tool_calls():
    assert assistant_contents(CONVERSATION) == ["It is 2."]
    assert completion_text(CONVERSATION + [{"role": "assistant", "content": "Done."}]) == "It is 2.\nDone."
    assert prompt_text(CONVERSATION[:2]) == "Be brief."  # only string content counts as prompt text


def test_transcripts_show_roles_tool_calls_and_results():
    text = render_transcript(CONVERSATION[2:])
    assert text == 'ASSISTANT: [calls add({"a":1})]\n\nTOOL: 2\n\nASSISTANT: It is 2.'
