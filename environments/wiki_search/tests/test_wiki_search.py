"""wiki-search: the corpus and its questions agree, BM25 finds the right article, read()
helps a model that misspells, answers are matched exactly after normalisation, and a
scripted model that searches, reads and answers earns full marks over real HTTP."""

from __future__ import annotations

import inspect
import re
import tomllib
from collections import Counter

import pytest

import lmgym
from lmgym import OpenAIClient, ToolEnv, XMLParser
from lmgym.registry import available_environments, describe
from lmgym.testing import ScriptedServer, tool_call
from lmgym.types import Example, Rollout, Turn


@pytest.fixture(scope="module")
def env() -> ToolEnv:
    return lmgym.load_environment("wiki-search")


@pytest.fixture(scope="module")
def ws():
    """The environment's module, for its helpers."""
    return inspect.getmodule(available_environments()["wiki-search"].load())


@pytest.fixture(scope="module")
def corpus(ws):
    return ws.Corpus.load()


def full_text(corpus, title: str) -> str:
    return " ".join([title, *corpus.articles[title].values()])


# --- data -----------------------------------------------------------------------------------


def test_corpus_is_a_few_dozen_short_articles_with_sections(corpus, ws):
    assert 40 <= len(corpus.articles) <= 60
    for title, sections in corpus.articles.items():
        assert 150 <= len(full_text(corpus, title).split()) <= 400, title
        assert list(sections)[0] == ws.INTRODUCTION and sections[ws.INTRODUCTION] and len(sections) >= 3, title
        assert all(body.strip() for body in sections.values()), title
    keys = [ws.normalize(t) for t in corpus.articles]
    assert len(set(keys)) == len(keys)  # read() can tell every title apart


def test_every_question_is_backed_by_a_chain_of_existing_articles(corpus, ws):
    """Evidence titles exist; consecutive ones name each other (the next hop can be found);
    the answer is written in the last of them, and not in the question."""
    rows = ws.load_questions()
    assert len({r["question"] for r in rows}) == len(rows) >= 60
    for row in rows:
        titles, answer = row["info"]["titles"], f" {ws.normalize(row['answer'])} "
        assert set(titles) <= set(corpus.articles), (row["question"], titles)
        assert row["info"]["hops"] == len(titles) in (2, 3) and len(set(titles)) == len(titles)
        for a, b in zip(titles, titles[1:]):
            assert a.lower() in full_text(corpus, b).lower() or b.lower() in full_text(corpus, a).lower(), (a, b)
        assert answer in f" {ws.normalize(full_text(corpus, titles[-1]))} ", row["question"]
        assert answer not in f" {ws.normalize(row['question'])} ", row["question"]
        assert row["question"].endswith("?") and len(row["answer"].split()) <= 4
    assert Counter(r["info"]["hops"] for r in rows)[3] >= 10


def test_split_is_fixed_disjoint_and_nested(ws):
    small, large = lmgym.load_environment("wiki-search", num_eval_examples=5), lmgym.load_environment("wiki-search")
    text = lambda examples: [e.prompt[-1]["content"] for e in examples]  # noqa: E731
    assert text(large.eval_dataset)[:5] == text(small.eval_dataset)  # more eval questions only add
    assert not set(text(large.eval_dataset)) & set(text(large.dataset))
    assert len(large.dataset) + len(large.eval_dataset) == len(ws.load_questions())
    assert lmgym.load_environment("wiki-search", num_eval_examples=0).eval_dataset is None
    for bad in (-1, len(ws.load_questions())):
        with pytest.raises(ValueError, match="num_eval_examples"):
            lmgym.load_environment("wiki-search", num_eval_examples=bad)


# --- tools ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, first",
    [
        ("who invented the tide clock", "Tide clock"),
        ("Kelmsay lighthouse", "Kelmsay Light"),
        ("fern that grows on warm volcanic ground", "Ember fern"),
        ("first flight between two islands biplane", "Maud Ellery"),
        ("glassworks founded 1655 sand", "Osk Glassworks"),
        ("signal towers message Harnhold Lanterby", "Semaphore chain"),
        ("highest mountain of the archipelago", "Dunlarrow"),
    ],
)
def test_bm25_ranks_the_right_article_first(corpus, query, first):
    assert corpus.rank(query)[0][1] == first


def test_search_lists_titles_with_one_line_snippets(env):
    search = env.toolbox["search"].func
    lines = search("Hask lens lighthouse", k=3).splitlines()
    assert len(lines) == 3 and lines[0].startswith("1. Hask lens: ")
    assert all(len(line) < 200 for line in lines)
    assert "No article matches" in search("zebra quantum")
    with pytest.raises(ValueError, match="k must be between 1 and 10"):
        search("lens", k=0)


def test_read_whole_article_one_section_and_helpful_errors(env):
    read = env.toolbox["read"].func
    whole = read("Kelmsay Light")
    assert whole.startswith("# Kelmsay Light\n\n") and "## Construction" in whole and "completed in 1783" in whole
    section = read("kelmsay light", "the LENS")  # titles and sections match loosely
    assert section.startswith("# Kelmsay Light / The lens\n\n") and "34 kilometres" in section and "1783" not in section
    assert read("Harnhold-Fellmouth railway").startswith("# Harnhold–Fellmouth Railway")  # - for –
    with pytest.raises(LookupError, match="close titles: Kelmsay Light"):
        read("Kelmsey Lighthouse")
    with pytest.raises(LookupError, match="use search"):
        read("Quantum zebra")
    with pytest.raises(LookupError, match="its sections: Introduction, Construction, The lens, Keepers, Ember Holm"):
        read("Kelmsay Light", "Gift shop")


def test_tool_schemas_come_from_the_docstrings(env):
    search, read = (env.toolbox[name].schema["function"] for name in ("search", "read"))
    assert search["description"].startswith("Search the encyclopedia")
    assert search["parameters"]["required"] == ["query"] and "1 to 10" in search["parameters"]["properties"]["k"]["description"]
    assert read["parameters"]["required"] == ["title"] and "History" in read["parameters"]["properties"]["section"]["description"]


# --- scoring --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, answer, correct",
    [
        ("1783", "1783", True),
        (" 1783. ", "1783", True),
        ("1,104 metres", "1104", True),
        ("1104 m", "1104", True),
        ("forty-two", "42", True),
        ("Nine", "9", True),
        ("the Harvest Moot", "Harvest Moot", True),
        ("OSK HAVEN", "Osk Haven", True),
        ('"The Teeth"', "The Teeth", True),
        ("many shores one learning", "Many shores, one learning", True),
        ("1784", "1783", False),
        ("1783 or 1812", "1783", False),
        ("in 1783", "1783", False),
        ("Osk", "Osk Haven", False),
        ("", "1783", False),
        (None, "1783", False),
    ],
)
def test_answers_match_exactly_after_normalisation(ws, given, answer, correct):
    assert ws.is_correct(given, answer) is correct


def test_aliases_are_accepted(ws):
    assert ws.is_correct("HMS Wayfinder", "Wayfinder", ["HMS Wayfinder"]) and not ws.is_correct("HMS Wayfinder", "Wayfinder")


@pytest.mark.parametrize(
    "reply, reward",
    [("<answer>1,783</answer>", 1.2), ("It was 1783.", 0.0), ("<answer>1812</answer>", 0.2), ("<answer>1783</answer> done", 1.0)],
)
async def test_scored_by_hand(env, reply, reward):
    example = Example(id=0, prompt=[{"role": "user", "content": "q"}], answer="1783", info={"titles": [], "aliases": []})
    rollout = Rollout(example=example, turns=[Turn(assistant={"role": "assistant", "content": reply})])
    await env.rubric.score_group([rollout])
    assert rollout.error is None and rollout.reward == pytest.approx(reward)


# --- end to end -----------------------------------------------------------------------------

QUESTION = "In what year was the lighthouse that received the first Hask lens completed?"


def researcher(request) -> dict | str:
    """A scripted model: search, read the lighthouse the snippets name, answer from the article."""
    messages = request["messages"]
    last = messages[-1]
    if last["role"] == "user":
        return {"content": None, "tool_calls": [tool_call("search", {"query": "first Hask lens lighthouse"})]}
    if last["content"].startswith("1. "):
        title = re.search(r"^\d+\. (Kelmsay Light):", last["content"], re.MULTILINE).group(1)
        return {"content": None, "tool_calls": [tool_call("read", {"title": title, "section": "Construction"})]}
    year = re.search(r"completed in (\d{4})", last["content"]).group(1)
    return f"<answer>{year}</answer>"


async def test_search_read_answer_end_to_end_over_http(env):
    example = next(e for e in [*env.dataset, *env.eval_dataset] if e.prompt[-1]["content"] == QUESTION)
    assert example.info["titles"] == ["Hask lens", "Kelmsay Light"] and "Kelmsay Light" not in str(example.prompt)
    with ScriptedServer(reply=researcher) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "scripted", example)
        await client.aclose()
    await env.score_group([rollout])
    assert rollout.error is None and len(rollout.turns) == 3 and rollout.state["stop_reason"] == "done"
    assert [t["function"]["name"] for t in server.requests[0]["tools"]] == ["search", "read"]
    assert server.requests[0]["messages"][0]["content"] == env.eval_dataset[0].prompt[0]["content"]  # system prompt
    assert rollout.reward == pytest.approx(1.2)
    metrics = rollout.metrics
    assert (metrics["correct_answer"], metrics["format_reward"]) == (1.0, 1.0)
    assert (metrics["tool_calls"], metrics["tool_errors"], metrics["calls_search"], metrics["calls_read"]) == (2, 0, 1, 1)


# --- packaging ------------------------------------------------------------------------------


def test_registered_and_packaged(env, ws):
    from pathlib import Path

    assert isinstance(env, ToolEnv) and isinstance(env.parser, XMLParser) and env.max_turns == 8
    assert env.rubric.names[:2] == ["correct_answer", "format_reward"] and env.rubric.weights[:2] == [1.0, 0.2]
    assert len(env.dataset) == len(ws.load_questions()) - 20 and len(env.eval_dataset) == 20
    folder = Path(ws.__file__).resolve().parent.parent
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lmgym.environments"] == {"wiki-search": "wiki_search:load_environment"}
    assert project["tool"]["setuptools"]["package-data"] == {"wiki_search": ["questions.jsonl"], "wiki_search.articles": ["*.md"]}
    assert describe(available_environments()["wiki-search"]).rstrip(".") == project["project"]["description"]
