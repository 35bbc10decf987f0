import inspect

import pytest

from lmgym.parsers import Parser, ThinkParser, XMLParser, last_assistant_text


def assistant(content):
    return {"role": "assistant", "content": content}


def user(content):
    return {"role": "user", "content": content}


GOOD = "<think>\nstep 1\n</think>\n<answer>\n42\n</answer>"


def xml(**kwargs):
    return XMLParser(["think", "answer"], **kwargs)


# --- base Parser -------------------------------------------------------------


def test_last_assistant_text():
    assert last_assistant_text("raw") == "raw"
    assert last_assistant_text([user("q"), assistant("a"), user("r"), assistant("b")]) == "b"
    assert last_assistant_text([user("q")]) is None
    assert last_assistant_text([assistant(None)]) == ""


def test_base_parser():
    parser = Parser()
    assert parser.parse("  hi \n") == "hi"
    assert parser.parse_answer([user("q"), assistant(" 7 ")]) == "7"
    assert parser.parse_answer([user("q")]) is None
    assert parser.parse_answer([assistant("   ")]) is None
    assert parser.format_reward([assistant("anything")]) == 1.0


@pytest.mark.parametrize("parser", [Parser(), xml(), ThinkParser()])
def test_get_format_reward_func(parser):
    func = parser.get_format_reward_func()
    assert func.__name__ == "format_reward"
    assert list(inspect.signature(func).parameters) == ["completion"]
    completion = [assistant(GOOD)]
    assert func(completion=completion) == parser.format_reward(completion)


# --- XMLParser: parse ---------------------------------------------------------


def test_xml_parse_fields():
    parsed = xml().parse(GOOD)
    assert parsed.think == "step 1"
    assert parsed.answer == "42"


def test_xml_parse_last_occurrence_wins():
    parsed = xml().parse("<answer>1</answer> wait <answer> 2 </answer>")
    assert parsed.answer == "2"


def test_xml_parse_missing_field_is_none():
    parsed = xml().parse("<answer>5</answer>")
    assert parsed.think is None
    assert parsed.answer == "5"
    assert xml().parse("<answer>unclosed").answer is None


def test_xml_parse_alternatives():
    parser = XMLParser([("code", "python"), "answer"])
    assert parser.parse("<python>print(1)</python>").code == "print(1)"
    assert parser.parse("<code>a</code><python>b</python>").code == "b"
    assert not hasattr(parser.parse(""), "python")
    # A tag must close with its own name.
    assert parser.parse("<code>a</python>").code is None


def test_xml_parse_answer():
    parser = xml()
    completion = [user("q"), assistant("<answer>x</answer>"), assistant(GOOD)]
    assert parser.parse_answer(completion) == "42"
    assert parser.parse_answer([assistant("<think>t</think>")]) is None
    assert parser.parse_answer([assistant("<answer>  </answer>")]) is None
    assert parser.parse_answer([user("q")]) is None
    assert parser.parse_answer([assistant(None)]) is None
    assert XMLParser(["think", "result"], answer_field="result").parse_answer(
        "<result>r</result>"
    ) == "r"


def test_xml_constructor_validation():
    with pytest.raises(ValueError):
        XMLParser(["think"])  # no answer field
    with pytest.raises(ValueError):
        xml(optional=("missing",))
    with pytest.raises(ValueError):
        XMLParser([("answer", "think"), "think"])
    with pytest.raises(ValueError):
        XMLParser(["answer", "bad tag"])


# --- XMLParser: format --------------------------------------------------------


def test_xml_format():
    parser = xml()
    text = parser.format(think="step 1", answer="42")
    assert text == GOOD
    parsed = parser.parse(text)
    assert (parsed.think, parsed.answer) == ("step 1", "42")
    assert parser.format_reward([assistant(text)]) == 1.0


def test_xml_format_order_and_errors():
    parser = xml(optional=("think",))
    assert parser.format(answer="1", think="t") == "<think>\nt\n</think>\n<answer>\n1\n</answer>"
    assert parser.format(answer="1") == "<answer>\n1\n</answer>"
    with pytest.raises(ValueError):
        parser.format(answer="1", extra="x")


# --- XMLParser: format_reward -------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "<think>a</think><answer>b</answer>",
        "\n  <think>a</think>\n\n<answer>b</answer>\n ",
        "<think>x < y and <b>bold</b></think><answer>b</answer>",
    ],
)
def test_xml_format_reward_well_formed(text):
    assert xml().format_reward([user("q"), assistant(text)]) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("<think>a</think><answer>b</think>", id="mismatched-close"),
        pytest.param("<think>a</answer><answer>b</answer>", id="mismatched-first"),
        pytest.param("<think>a</think><answer>b", id="unclosed"),
        pytest.param("<think>a<answer>b</answer>", id="unclosed-think"),
        pytest.param("<answer>b</answer><think>a</think>", id="out-of-order"),
        pytest.param("<think>a</think><think>c</think><answer>b</answer>", id="dup-think"),
        pytest.param("<think>a</think><answer>b</answer><answer>c</answer>", id="dup-answer"),
        pytest.param("Sure! <think>a</think><answer>b</answer>", id="text-before"),
        pytest.param("<think>a</think> so <answer>b</answer>", id="text-between"),
        pytest.param("<think>a</think><answer>b</answer> done", id="text-after"),
        pytest.param("<think>a<answer>b</answer></think>", id="nested"),
        pytest.param("<think>a</think><answer>b<think>c</think></answer>", id="nested-in-answer"),
        pytest.param("<answer>b</answer>", id="required-missing"),
        pytest.param("<think>a</think>", id="answer-missing"),
        pytest.param("</think>a<think><answer>b</answer>", id="close-before-open"),
        pytest.param("just an answer", id="no-tags"),
        pytest.param("   ", id="blank"),
        pytest.param("", id="empty"),
    ],
)
def test_xml_format_reward_malformed(text):
    assert xml().format_reward([assistant(text)]) == 0.0


def test_xml_format_reward_optional_field():
    parser = xml(optional=("think",))
    assert parser.format_reward([assistant("<answer>b</answer>")]) == 1.0
    assert parser.format_reward([assistant(GOOD)]) == 1.0
    assert parser.format_reward([assistant("<answer>b</answer><think>a</think>")]) == 0.0
    assert parser.format_reward([assistant("<think>a</think>")]) == 0.0


def test_xml_format_reward_optional_middle_field():
    parser = XMLParser(["think", "code", "answer"], optional=("code",))
    assert parser.format_reward("<think>a</think><answer>b</answer>") == 1.0
    assert parser.format_reward("<think>a</think><code>c</code><answer>b</answer>") == 1.0
    assert parser.format_reward("<code>c</code><answer>b</answer>") == 0.0


def test_xml_format_reward_alternatives():
    parser = XMLParser(["think", ("code", "python")], answer_field="code")
    assert parser.format_reward("<think>a</think><python>x</python>") == 1.0
    assert parser.format_reward("<think>a</think><code>x</code>") == 1.0
    assert parser.format_reward("<think>a</think><code>x</python>") == 0.0
    assert parser.format_reward("<think>a</think><code>x</code><python>y</python>") == 0.0


def test_xml_format_reward_averages_assistant_messages():
    parser = xml()
    completion = [
        assistant(GOOD),
        {"role": "tool", "content": "junk", "tool_call_id": "1"},
        user("more"),
        assistant("<answer>b</think>"),
    ]
    assert parser.format_reward(completion) == 0.5
    assert parser.format_reward([assistant(GOOD)] * 3 + [assistant("bad")]) == 0.75


def test_xml_format_reward_no_assistant_or_none_content():
    parser = xml()
    assert parser.format_reward([]) == 0.0
    assert parser.format_reward([user(GOOD)]) == 0.0
    assert parser.format_reward([assistant(None)]) == 0.0
    assert parser.format_reward([assistant(None), assistant(GOOD)]) == 0.5


def test_xml_format_reward_string_completion():
    assert xml().format_reward(GOOD) == 1.0
    assert xml().format_reward("<answer>b</answer>") == 0.0


# --- ThinkParser ----------------------------------------------------------------


def test_think_parse():
    parser = ThinkParser()
    assert parser.parse("<think>hmm</think>\n 42 ") == "42"
    assert parser.parse("<think>hmm, never done") == ""
    assert parser.parse("  plain answer \n") == "plain answer"
    assert parser.parse("<think>a</think>") == ""
    # The answer is what follows the last closing tag.
    assert parser.parse("<think>a</think>b</think> c") == "c"


def test_think_parse_extract_fn():
    parser = ThinkParser(extract_fn=lambda s: s.split("=")[-1].strip())
    assert parser.parse("<think>2+2</think> 2+2 = 4") == "4"
    assert parser.parse("no tags x = 1") == "1"
    calls = []
    ThinkParser(extract_fn=calls.append).parse("<think>unfinished")
    assert calls == []  # no answer, nothing to extract


def test_think_parse_answer():
    parser = ThinkParser()
    assert parser.parse_answer([user("q"), assistant("<think>t</think>A")]) == "A"
    assert parser.parse_answer([assistant("<think>still going")]) is None
    assert parser.parse_answer([user("q")]) is None


@pytest.mark.parametrize(
    "text",
    [
        "<think>t</think>A",
        "  \n<think>\nt\n</think>\n\nA\n",
        "<think></think>A",
    ],
)
def test_think_format_reward_well_formed(text):
    assert ThinkParser().format_reward([assistant(text)]) == 1.0


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("A", id="no-think"),
        pytest.param("intro <think>t</think>A", id="text-before-think"),
        pytest.param("<think>t", id="unclosed"),
        pytest.param("<think>t</think>", id="no-answer"),
        pytest.param("<think>t</think>  \n", id="blank-answer"),
        pytest.param("<think>a</think><think>b</think>A", id="two-thinks"),
        pytest.param("<think>a</think>b</think>A", id="two-closes"),
        pytest.param("<think>a<think>b</think>A", id="two-opens"),
        pytest.param("</think>A", id="close-only"),
        pytest.param("", id="empty"),
    ],
)
def test_think_format_reward_malformed(text):
    assert ThinkParser().format_reward([assistant(text)]) == 0.0


def test_think_format_reward_averaging():
    parser = ThinkParser()
    assert parser.format_reward([assistant("<think>t</think>A"), assistant("A")]) == 0.5
    assert parser.format_reward([]) == 0.0
    assert parser.format_reward([user("<think>t</think>A")]) == 0.0
    assert parser.format_reward([assistant(None)]) == 0.0
    assert parser.format_reward("<think>t</think>A") == 1.0


def test_xml_format_reward_gives_no_credit_for_empty_fields():
    parser = XMLParser(["think", "answer"])
    assert parser.format_reward("<think>\nhm\n</think>\n<answer>\n</answer>") == 0.0
    assert parser.format_reward("<think> </think><answer>4</answer>") == 0.0
    assert parser.format_reward("<think>hm</think><answer>4</answer>") == 1.0


def test_format_reward_does_not_judge_replies_that_are_only_tool_calls():
    parser = XMLParser(["answer"])
    completion = [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "4", "tool_call_id": "c"},
        {"role": "assistant", "content": "<answer>4</answer>"},
    ]
    assert parser.format_reward(completion) == 1.0
    assert parser.format_reward([{"role": "assistant", "content": None}]) == 0.0  # no text at all is still bad
