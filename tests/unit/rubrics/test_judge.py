"""LLM judges against a scripted judge server on loopback: verdicts, caching, errors,
group judging and generated criteria (stored, and reused on resume)."""

from __future__ import annotations

import json
import re

import orjson
import pytest

from lmgym import OpenAIClient, Rubric, SingleTurnEnv
from lmgym.errors import ModelConnectionError, VerdictError
from lmgym.eval.runner import run_eval
from lmgym.rubrics.criteria import CriteriaRubric, Criterion, parse_criteria, weighted_fraction
from lmgym.rubrics.judge import GroupJudge, Judge, JudgeEndpoint, JudgeRubric
from lmgym.rubrics.verdicts import parse_json, parse_score, parse_yes_no
from lmgym.testing import ScriptedServer, last_user_text

# -- verdicts ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Verdict: yes", 1.0), ("verdict: NO", 0.0), ("**Yes.** The response matches.", 1.0),
    ("No, the response says 5.", 0.0), ("The final answer agrees, so: correct", 1.0),
    ("<think>no wait, maybe no</think>Yes", 1.0), ("It is not right at first but\nVerdict: **yes**", 1.0),
])
def test_yes_no_verdicts(text, expected):
    assert parse_yes_no(text) == expected


@pytest.mark.parametrize("text", ["", "Maybe.", "Yes or no? No.", "The response is 12."])
def test_unreadable_yes_no_is_an_error(text):
    with pytest.raises(VerdictError):
        parse_yes_no(text)


def test_scores_are_scaled_and_checked():
    assert parse_score("Reasoning... Score: 7/10") == pytest.approx(0.7)
    assert parse_score("I give it 4/5") == pytest.approx(0.8)
    assert parse_score("7 out of 10") == pytest.approx(0.7)
    assert parse_score("3", low=1, high=5) == pytest.approx(0.5)
    for bad in ("Score: 11", "no number", "-1"):
        with pytest.raises(VerdictError):
            parse_score(bad)


def test_json_verdicts_take_the_last_object():
    assert parse_json('Thinking {not json}. ```json\n{"score": 3}\n```') == {"score": 3}
    assert parse_json('first {"a": 1} then {"a": 2}') == {"a": 2}
    assert parse_json('{"met": [true, false]}') == {"met": [True, False]}
    with pytest.raises(VerdictError):
        parse_json("no object here")


# -- the scripted servers ------------------------------------------------------------------
# One judge server and one policy server serve the module (stopping a server takes about
# 0.2 s, and a test used two or three); each test sets their replies and starts with no
# requests and no faults.

@pytest.fixture(scope="module")
def shared_servers():
    with ScriptedServer() as judge_server, ScriptedServer() as policy_server:
        yield judge_server, policy_server


def fresh(server: ScriptedServer, reply) -> ScriptedServer:
    server.app.reply = reply if callable(reply) else (lambda request, text=reply: text)
    server.app.requests.clear()
    server.app.faults.clear()
    return server


@pytest.fixture
def judge_with(shared_servers):
    """judge_with(reply): the module's judge server answering with `reply`."""
    return lambda reply: fresh(shared_servers[0], reply)


@pytest.fixture
def policy_server(shared_servers):
    """The module's policy server, answering with `policy` unless a test sets its reply."""
    return fresh(shared_servers[1], policy)


# -- one judge per rollout --------------------------------------------------------------

def policy(request) -> str:
    """Answers '4' to everything; a question containing 'long' gets a rambling answer."""
    return "It is 4, I think, 4 4 4." if "long" in last_user_text(request) else "4"


def judge_by_reference(request) -> str:
    text = last_user_text(request)
    if "unreadable" in text:
        return "Hmm, hard to say."
    reference = re.search(r"Reference answer:\n(.*)\n", text).group(1)
    response = text.split("Response:\n", 1)[1].split("\n\n")[0]
    return "Verdict: yes" if reference in response else "Verdict: no"


ROWS = [
    {"question": "2+2?", "answer": "4"},
    {"question": "3+2?", "answer": "5"},
    {"question": "unreadable 2+2?", "answer": "4"},
]


async def evaluate(server, env, tmp_path, rollouts=2):
    """`env` evaluated with the policy `server` as the model: (summary, records in order)."""
    client = OpenAIClient(server.base_url)
    summary = await run_eval(env, client, model="policy", examples=env.get_eval_examples(), rollouts_per_example=rollouts, concurrency=4, run_dir=tmp_path)
    await client.aclose()
    records = [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    return summary, sorted(records, key=lambda r: (str(r["example_id"]), r["rollout"]))


async def test_judge_is_one_line_and_its_verdicts_become_rewards(tmp_path, judge_with, policy_server):
    judge_server = judge_with(judge_by_reference)
    judge = Judge("judge-model", base_url=judge_server.base_url)
    env = SingleTurnEnv(eval_dataset=ROWS, rubric=Rubric().add(judge, weight=2.0))
    summary, records = await evaluate(policy_server, env, tmp_path)
    rewards = {(r["example_id"], r["rollout"]): r["reward"] for r in records}
    assert rewards[(0, 0)] == rewards[(0, 1)] == 2.0 and rewards[(1, 0)] == 0.0
    unreadable = [r for r in records if r["example_id"] == 2]
    assert all(r["error"]["kind"] == "verdict" and "neither yes nor no: 'Hmm, hard to say.'" in r["error"]["message"] for r in unreadable)
    # the two rollouts of an example answered alike: their identical judge prompts were sent once
    assert len(judge_server.requests) == 3 and judge.endpoint.requests == 3
    assert judge_server.requests[0]["temperature"] == 0.0 and judge_server.requests[0]["model"] == "judge-model"
    assert summary.errors["verdict"] == 2


async def test_templates_name_dataset_columns_and_missing_fields_are_clear(tmp_path, judge_with, policy_server):
    judge_server = judge_with(lambda request: "Score: 8" if "level hard" in last_user_text(request) else "Score: 2")
    judge = Judge(JudgeEndpoint("j", base_url=judge_server.base_url), template="level {level}: {response}", verdict="score")
    rows = [{"question": "a", "level": "hard"}, {"question": "b", "level": "easy"}]
    env = SingleTurnEnv(eval_dataset=rows, rubric=Rubric([judge]))
    _, records = await evaluate(policy_server, env, tmp_path / "a", rollouts=1)
    assert [r["reward"] for r in records] == [pytest.approx(0.8), pytest.approx(0.2)]
    missing = SingleTurnEnv(eval_dataset=[{"question": "a"}], rubric=Rubric([judge]))
    _, records = await evaluate(policy_server, missing, tmp_path / "b", rollouts=1)
    assert records[0]["error"]["kind"] == "reward" and "names ['level']" in records[0]["error"]["message"]


async def test_json_verdicts_and_judge_rubric(tmp_path, judge_with, policy_server):
    verdicts = iter(['{"score": 0.5}', 'after thought: {"score": true}'])
    judge_server = judge_with(lambda request: next(verdicts))
    rubric = JudgeRubric("j", base_url=judge_server.base_url, verdict="json", score_range=(0, 1), funcs=[lambda completion: 1.0], weights=[0.1])
    env = SingleTurnEnv(eval_dataset=[{"question": "a"}, {"question": "b"}], rubric=rubric)
    _, records = await evaluate(policy_server, env, tmp_path, rollouts=1)
    assert sorted(r["metrics"]["judge"] for r in records) == [0.5, 1.0]
    assert sorted(r["reward"] for r in records) == [pytest.approx(0.6), pytest.approx(1.1)]


async def test_a_judge_server_error_is_recorded_and_an_unreachable_judge_stops_the_run(tmp_path, judge_with, policy_server):
    judge_server = judge_with("Verdict: yes")
    judge_server.fail_next(400)
    env = SingleTurnEnv(eval_dataset=ROWS[:1], rubric=Rubric([Judge("j", base_url=judge_server.base_url)]))
    _, records = await evaluate(policy_server, env, tmp_path / "a", rollouts=1)
    error = records[0]["error"]
    assert error["kind"] == "reward" and "'judge' raised ModelRequestError" in error["message"] and records[0]["reward"] is None
    gone = SingleTurnEnv(eval_dataset=ROWS[:1], rubric=Rubric([Judge("j", base_url="http://127.0.0.1:9/v1", max_retries=0)]))
    with pytest.raises(ModelConnectionError):
        await evaluate(policy_server, gone, tmp_path / "b", rollouts=1)


# -- group judging ------------------------------------------------------------------------

def longer_is_better(request) -> str:
    """Scores each shown response by its length, so the right score must reach the right rollout."""
    text = last_user_text(request)
    responses = re.findall(r"Response (\d+):\n(.*?)(?=\n\nResponse \d+:|\n\nReply with)", text, re.S)
    if "ranking" in text:
        order = sorted(responses, key=lambda r: -len(r[1]))
        return json.dumps({"ranking": [int(number) for number, _ in order]})
    return json.dumps({"scores": [min(10, len(body)) for _, body in responses]})


@pytest.mark.parametrize("mode", ["score", "rank"])
async def test_group_judge_scores_reach_the_right_rollouts(tmp_path, judge_with, policy_server, mode):
    replies = iter(["a", "bbbbb", "cccccccccccc"] * 2)
    judge_server, server = judge_with(longer_is_better), fresh(policy_server, lambda request: next(replies))
    env = SingleTurnEnv(eval_dataset=[{"question": "q1"}, {"question": "q2"}], rubric=Rubric([GroupJudge("j", base_url=judge_server.base_url, mode=mode)]))
    client = OpenAIClient(server.base_url)
    await run_eval(env, client, model="p", examples=env.get_eval_examples(), rollouts_per_example=3, concurrency=1, run_dir=tmp_path)
    await client.aclose()
    records = [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    by_text = {r["completion"][-1]["content"]: r["reward"] for r in records}
    expected = {"a": 0.1, "bbbbb": 0.5, "cccccccccccc": 1.0} if mode == "score" else {"a": 0.0, "bbbbb": 0.5, "cccccccccccc": 1.0}
    assert by_text == pytest.approx(expected)
    assert len(judge_server.requests) == 2  # one call per example, not per rollout
    shown = re.findall(r"Response \d+:\n(\w+)", last_user_text(judge_server.requests[0]))
    assert sorted(shown) == ["a", "bbbbb", "cccccccccccc"]


async def test_group_judge_with_a_wrong_number_of_scores_errors_the_group(tmp_path, judge_with, policy_server):
    judge_server = judge_with('{"scores": [5]}')
    env = SingleTurnEnv(eval_dataset=[{"question": "q"}], rubric=Rubric([GroupJudge("j", base_url=judge_server.base_url)]))
    _, records = await evaluate(policy_server, env, tmp_path, rollouts=2)
    assert all(r["error"]["kind"] == "verdict" and "not 2 numbers" in r["error"]["message"] for r in records)


# -- generated criteria ---------------------------------------------------------------------

def writer_and_checker(request) -> str:
    text = last_user_text(request)
    if text.startswith("Write a grading checklist"):
        return 'Here is the checklist:\n{"criteria": [{"criterion": "mentions 4", "weight": 3}, {"criterion": "is short", "weight": 1}]}'
    response = text.split("Response:\n", 1)[1].split("\n\nChecklist:")[0]
    return json.dumps({"met": ["4" in response, len(response) < 5]})


def test_criteria_parsing_and_weighting():
    criteria = parse_criteria('{"criteria": [{"criterion": "a", "weight": 3}, {"criterion": "b"}]}', max_criteria=5)
    assert criteria == [Criterion("a", 3.0), Criterion("b", 1.0)]
    assert weighted_fraction(criteria, [True, False]) == 0.75
    for bad in ('{"criteria": []}', '{"criteria": [{"weight": 2}]}', '{"criteria": [{"criterion": "a", "weight": -1}]}', '{"list": []}'):
        with pytest.raises(VerdictError):
            parse_criteria(bad, 5)
    with pytest.raises(VerdictError, match="not 2 true/false"):
        weighted_fraction(criteria, [True])


async def test_criteria_are_written_once_per_example_stored_and_reused_on_resume(tmp_path, judge_with, policy_server):
    rows = [{"question": "What is 2+2?", "answer": "4"}, {"question": "Explain 2+2 in a long answer.", "answer": "4"}]
    judge_server = judge_with(writer_and_checker)
    rubric = CriteriaRubric("writer", base_url=judge_server.base_url)
    env = SingleTurnEnv(eval_dataset=rows, rubric=rubric)
    _, records = await evaluate(policy_server, env, tmp_path, rollouts=2)
    writes = [r for r in judge_server.requests if last_user_text(r).startswith("Write a grading checklist")]
    assert len(writes) == 2  # one per example, not per rollout
    assert {r["example_id"]: r["reward"] for r in records} == {0: 1.0, 1: 0.75}  # "It is 4, ..." is not short
    stored = [orjson.loads(line) for line in (tmp_path / "criteria.jsonl").read_bytes().splitlines()]
    assert len(stored) == 2 and stored[0]["criteria"][0] == {"criterion": "mentions 4", "weight": 3.0}

    # resume with one more rollout per example: the stored checklists are used, none is rewritten
    before = len(judge_server.requests)
    env = SingleTurnEnv(eval_dataset=rows, rubric=CriteriaRubric("writer", base_url=judge_server.base_url))
    _, records = await evaluate(policy_server, env, tmp_path, rollouts=3)
    new = judge_server.requests[before:]
    assert len(records) == 6 and not any(last_user_text(r).startswith("Write a grading checklist") for r in new)
    assert len(new) == 2  # only the two new rollouts were checked


# -- the bundled creative-writing environment ------------------------------------------------

def test_creative_writing_needs_a_judge():
    from lmgym import load_environment
    from lmgym.errors import UsageError

    with pytest.raises(UsageError, match="judge_model"):
        load_environment("creative-writing")


async def test_creative_writing_end_to_end(tmp_path, judge_with, policy_server):
    from lmgym import load_environment

    def judge(request) -> str:
        text = last_user_text(request)
        if text.startswith("Write a grading checklist"):
            return '{"criteria": [{"criterion": "follows the form asked for", "weight": 2}, {"criterion": "vivid images", "weight": 1}]}'
        response = text.split("Response:\n", 1)[1].split("\n\nChecklist:")[0]
        return json.dumps({"met": [True, "lantern" in response]})

    pieces = iter(["A lantern hums; the keeper dreams of blue." * 1, "word " * 300])
    judge_server, server = judge_with(judge), fresh(policy_server, lambda request: next(pieces))
    env = load_environment("creative-writing", judge_model="judge", judge_base_url=judge_server.base_url)
    examples = env.get_eval_examples(2)
    client = OpenAIClient(server.base_url)
    await run_eval(env, client, model="writer", examples=examples, rollouts_per_example=1, concurrency=1, run_dir=tmp_path)
    await client.aclose()
    records = sorted((orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()), key=lambda r: r["example_id"])
    assert [r["metrics"]["criteria_met"] for r in records] == [1.0, pytest.approx(2 / 3)]
    assert [r["metrics"]["length_penalty"] for r in records] == [0.0, -1.0]  # 300 words: twice the limit
    assert records[1]["reward"] == pytest.approx(2 / 3 - 0.5)
    assert len((tmp_path / "criteria.jsonl").read_bytes().splitlines()) == 2
    assert all(e.id % 4 == 3 for e in env.get_eval_examples()) and len(env.dataset) == 24
