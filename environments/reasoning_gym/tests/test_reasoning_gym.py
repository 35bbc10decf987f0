"""The `reasoning-gym` environment: reasoning-gym's generators and scorers behind lmgym.

Datasets are built for a few cheap tasks; weights, labels, split hygiene and argument
errors are checked; scores are compared with the package's own `score_answer`; rollouts
run end to end through the scripted server (a model that knows every answer), through
`run_eval` (the per-task summary) and, marked `llama`, through `lmgym eval` on the
embedded model.
"""

from __future__ import annotations

import inspect
import tomllib
from collections import Counter
from pathlib import Path

import orjson
import pytest
from cli_runner import invoke

pytest.importorskip("reasoning_gym")

import reasoning_gym

import lmgym
from lmgym import OpenAIClient, SingleTurnEnv
from lmgym.eval.runner import run_eval
from lmgym.registry import BUNDLED_DIR, available_environments, describe
from lmgym.testing import ScriptedServer, last_user_text
from lmgym.types import Rollout, Turn

NAME = "reasoning-gym"
TASKS = ["leg_counting", "basic_arithmetic"]
TINY = {"min_terms": 2, "max_terms": 2, "max_digits": 1, "operators": ["+"], "allow_negation": False, "allow_parentheses": False}


def load(**args):
    args = {"tasks": TASKS, "size": 20, "num_eval_examples": 10, **args}
    return lmgym.load_environment(NAME, **args)


def questions(examples):
    return [e.prompt[-1]["content"] for e in examples]


def rows(examples):
    return [(e.prompt[-1]["content"], e.answer, e.task) for e in examples]


async def score(env, example, reply):
    turns = [] if reply is None else [Turn(assistant={"role": "assistant", "content": reply})]
    rollout = Rollout(example=example, turns=turns)
    await env.rubric.score_group([rollout])
    assert rollout.error is None, rollout.error
    return rollout


def package_score(task, given, example):
    """The score reasoning-gym itself gives, from a dataset built by the package alone."""
    entry = {"question": example.prompt[-1]["content"], "answer": example.answer, "metadata": example.info["metadata"]}
    return reasoning_gym.create_dataset(task).score_answer(given, entry)


# --- building -------------------------------------------------------------------------------


def test_loads_by_name_with_labels_metadata_parser_and_rubric():
    env = load(tasks=["leg_counting", "basic_arithmetic", "chain_sum"], size=30)
    assert isinstance(env, SingleTurnEnv) and env.max_turns == 1
    assert len(env.dataset) == 30 and len(env.eval_dataset) == 10
    for example in env.dataset + env.eval_dataset:
        system, user = example.prompt
        assert system["role"] == "system" and "<answer>" in system["content"]
        assert user["role"] == "user" and user["content"]
        assert example.task == example.info["metadata"]["source_dataset"]
        assert isinstance(example.answer, str) and example.answer
    assert {e.task for e in env.dataset} == {"leg_counting", "basic_arithmetic", "chain_sum"}
    assert isinstance(env.parser, lmgym.XMLParser) and env.rubric.parser is env.parser
    assert env.rubric.names == ["score_answer", "format_reward"] and env.rubric.weights == [1.0, 0.2]
    assert env.sampling_args == {"temperature": 0.7, "max_tokens": 1024}


def test_rows_are_the_packages_own_draws():
    env = load(tasks=["leg_counting"], size=5, seed=7)
    package = reasoning_gym.create_dataset("leg_counting", size=5, seed=8)  # the composite's first sub-seed is seed + 1
    assert [(e.prompt[-1]["content"], e.answer) for e in env.dataset] == [(d["question"], d["answer"]) for d in package]


def test_a_single_task_may_be_a_string():
    env = load(tasks="chain_sum")
    assert {e.task for e in env.dataset + env.eval_dataset} == {"chain_sum"}


def test_weights_are_respected_roughly():
    env = load(tasks={"leg_counting": 3, "basic_arithmetic": 1}, size=400, num_eval_examples=0)
    counts = Counter(e.task for e in env.dataset)
    assert 0.68 <= counts["leg_counting"] / 400 <= 0.82
    even = Counter(e.task for e in load(size=400, num_eval_examples=0).dataset)
    assert 0.42 <= even["leg_counting"] / 400 <= 0.58


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = load(seed=3), load(seed=3), load(seed=4)
    assert rows(a.dataset) == rows(b.dataset) and rows(a.eval_dataset) == rows(b.eval_dataset)
    assert rows(a.dataset) != rows(c.dataset) and rows(a.eval_dataset) != rows(c.eval_dataset)


def test_eval_never_shares_a_question_with_train():
    env = load(size=100, num_eval_examples=50)
    evals = questions(env.eval_dataset)
    assert not set(evals) & set(questions(env.dataset)) and len(set(evals)) == len(evals)


def test_eval_drops_overlaps_even_in_a_tiny_question_space():
    # about 110 distinct questions; 200 training draws cover most of them
    env = load(tasks=["basic_arithmetic"], config={"basic_arithmetic": TINY}, size=200, num_eval_examples=5)
    train = set(questions(env.dataset))
    assert len(train) < 200  # the draws did repeat
    assert len(env.eval_dataset) == 5 and not set(questions(env.eval_dataset)) & train
    with pytest.raises(ValueError, match="too few eval questions"):
        load(tasks=["basic_arithmetic"], config={"basic_arithmetic": {**TINY, "min_terms": 1, "max_terms": 1}}, size=100)


def test_no_eval_examples():
    env = load(num_eval_examples=0)
    assert env.eval_dataset is None and len(env.get_eval_examples()) == 20


def test_config_reaches_the_generator():
    env = load(tasks=["basic_arithmetic"], config={"basic_arithmetic": TINY})
    for question in questions(env.dataset):
        assert question.count("+") == 1 and not any(op in question for op in "*/(")


@pytest.mark.parametrize(
    "args, message",
    [
        ({"tasks": ["leg_countin"]}, r"unknown reasoning-gym task 'leg_countin'; did you mean leg_counting, .*list_tasks"),
        ({"tasks": ["no_such_thing_at_all"]}, r"unknown reasoning-gym task .*\(\d+ tasks; list them all with"),
        ({"tasks": ["composite"]}, "unknown reasoning-gym task 'composite'"),
        ({"tasks": []}, "at least one"),
        ({"tasks": ["chain_sum", "chain_sum"]}, "distinct"),
        ({"tasks": {"chain_sum": 0}}, "weight of task 'chain_sum' must be a positive number"),
        ({"tasks": {"chain_sum": -1.0}}, "must be a positive number"),
        ({"config": {"chain_sum": {}}}, r"not in tasks: \['chain_sum'\]"),
        ({"config": {"leg_counting": {"seed": 3}}}, "without seed or size"),
        ({"config": {"leg_counting": {"no_such_setting": 3}}}, "rejected the tasks' config"),
        ({"config": {"basic_arithmetic": {"min_terms": 0}}}, "rejected the tasks' config.*min_terms must be positive"),
        ({"size": 0}, "size must be at least 1"),
        ({"num_eval_examples": -1}, "num_eval_examples must be at least 0"),
        ({"answer_format": "json"}, "answer_format must be one of"),
    ],
)
def test_bad_arguments_are_rejected_clearly(args, message):
    with pytest.raises(ValueError, match=message):
        load(**args)


def test_list_tasks_names_every_generator():
    module = inspect.getmodule(available_environments()[NAME].load())
    tasks = module.list_tasks()
    assert len(tasks) >= 100 and {"leg_counting", "basic_arithmetic", "sudoku"} <= set(tasks)
    assert "composite" not in tasks


def test_package_metadata_matches_module():
    folder = BUNDLED_DIR / "reasoning_gym"
    project = tomllib.loads((folder / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["lmgym.environments"] == {NAME: "lmgym_reasoning_gym:load_environment"}
    assert project["tool"]["setuptools"]["py-modules"] == ["lmgym_reasoning_gym"]
    assert "reasoning-gym==0.1.25" in project["project"]["dependencies"]
    assert describe(available_environments()[NAME]).rstrip(".") == project["project"]["description"]
    assert not (folder / "reasoning_gym.py").exists()  # it would shadow the package it wraps
    assert len((folder / "lmgym_reasoning_gym.py").read_text().splitlines()) <= 160


# --- scoring --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, correct, formatted",
    [
        ("<answer>{a}</answer>", 1.0, 1.0),
        ("<answer>\n{a}\n</answer>", 1.0, 1.0),
        ("<think>\nadd them up\n</think>\n<answer>{a}</answer>", 1.0, 1.0),
        ("The total is <answer>{a}</answer>", 1.0, 0.0),
        ("<answer>{a}1</answer>", None, 1.0),  # contains the answer: the package's partial credit
        ("<answer>many</answer>", 0.0, 1.0),
        ("{a}", 0.0, 0.0),
        ("<answer>{a}", 0.0, 0.0),
        (None, 0.0, 0.0),
    ],
)
async def test_scored_with_the_packages_scorer(reply, correct, formatted):
    env = load()
    for example in env.dataset[:6]:
        text = None if reply is None else reply.format(a=example.answer)
        rollout = await score(env, example, text)
        value = rollout.metrics["score_answer"]
        assert (0.0 < value < 1.0) if correct is None else value == correct
        assert rollout.metrics["format_reward"] == formatted
        assert rollout.reward == pytest.approx(value + 0.2 * formatted)
        given = env.parser.parse_answer(text) if text else None
        if given is not None:
            assert value == package_score(example.task, given, example)


async def test_partial_credit_is_the_packages():
    """chain_sum's scorer pays len(answer) / len(reply) when the reply contains the answer."""
    env = load(tasks=["chain_sum"], size=5)
    example = env.dataset[0]
    given = f"{example.answer} or so"
    rollout = await score(env, example, f"<answer>{given}</answer>")
    expected = package_score("chain_sum", given, example)
    assert 0.0 < expected < 1.0 and rollout.metrics["score_answer"] == pytest.approx(expected)


async def test_plain_format_reads_the_whole_reply():
    env = load(answer_format="plain")
    example = env.dataset[0]
    assert "only the final answer" in example.prompt[0]["content"]
    assert env.rubric.names == ["score_answer"] and not isinstance(env.parser, lmgym.XMLParser)
    assert (await score(env, example, f"  {example.answer}\n")).reward == 1.0
    assert (await score(env, example, "no idea")).reward == 0.0


async def test_scored_inside_an_env_group_where_task_is_the_environment():
    group = lmgym.load_environment(f"{NAME},arithmetic", **{NAME: {"size": 4, "num_eval_examples": 2}, "arithmetic": {"num_examples": 2}})
    example = next(e for e in group.eval_dataset if e.task == NAME)
    original = group.environment_of(example)[1]
    rollout = Rollout(example=example, turns=[Turn(assistant={"role": "assistant", "content": f"<answer>{example.answer}</answer>"})])
    await group.score_group([rollout])
    assert rollout.error is None and rollout.metrics["score_answer"] == 1.0
    assert original.task in TASKS and rollout.example.task == NAME


def test_system_prompt_can_be_replaced_or_dropped():
    assert load(system_prompt="Be brief.").dataset[0].prompt[0] == {"role": "system", "content": "Be brief."}
    assert [m["role"] for m in load(system_prompt="").dataset[0].prompt] == ["user"]


def test_warm_start_rows_answer_the_train_split_in_format():
    env = load()
    rows_ = env.sft_examples(seed=0)
    assert len(rows_) == len(env.dataset)
    evals = set(questions(env.eval_dataset))
    for row, example in zip(rows_, env.dataset):
        assert row["prompt"] == example.prompt and row["prompt"][-1]["content"] not in evals
        reply = row["completion"][0]["content"]
        assert env.parser.format_reward(reply) == 1.0 and env.parser.parse_answer(reply) == example.answer


def test_a_source_of_training_data():
    from lmgym.train.orchestrator import DataStream

    env = load()
    stream = DataStream(env.dataset, seed=0)
    taken = stream.take(45)  # more than one epoch
    assert len(taken) == 45 and {e.task for e in taken} == set(TASKS)
    assert stream.position == {"epoch": 2, "index": 5}


# --- end to end -----------------------------------------------------------------------------


def knowing_model(env):
    """A scripted reply function that answers every question of `env` right, in tags."""
    answers = {e.prompt[-1]["content"]: e.answer for e in env.dataset + env.eval_dataset}
    return lambda request: f"<answer>{answers[last_user_text(request)]}</answer>"


async def test_end_to_end_rollouts_score_full_marks():
    env = load(tasks=["leg_counting", "basic_arithmetic", "chain_sum"], size=8, num_eval_examples=6)
    examples = env.dataset + env.get_eval_examples()
    with ScriptedServer(reply=knowing_model(env)) as server:
        client = OpenAIClient(server.base_url, max_retries=0)
        try:
            rollouts = [await env.rollout(client, "scripted", example) for example in examples]
        finally:
            await client.aclose()
    for rollout in rollouts:
        await env.score_group([rollout])
        assert rollout.error is None, rollout.error
        assert rollout.metrics == {"score_answer": 1.0, "format_reward": 1.0}
        assert rollout.reward == pytest.approx(1.2)
    assert server.requests[0]["messages"] == examples[0].prompt
    assert server.requests[0]["max_tokens"] == 1024


async def test_run_eval_summarises_each_task(tmp_path):
    env = load(size=10, num_eval_examples=12)
    with ScriptedServer(reply=knowing_model(env)) as server:
        client = OpenAIClient(server.base_url, max_retries=0)
        try:
            summary = await run_eval(
                env, client, model="scripted", examples=env.get_eval_examples(), rollouts_per_example=2,
                concurrency=4, run_dir=tmp_path,
            )
        finally:
            await client.aclose()
    result = summary.to_dict()
    assert result["rollouts"] == 24 and result["errors"] == {}
    assert result["metrics"] == {"score_answer": 1.0, "format_reward": 1.0}
    assert set(result["tasks"]) == set(TASKS)
    for task in result["tasks"].values():
        assert task["reward_mean"] == pytest.approx(1.2) and task["pass_at_k"]["1"] == 1.0
    records = [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    assert {r["task"] for r in records} == set(TASKS)
    assert all(r["info"]["metadata"]["source_dataset"] == r["task"] for r in records)


@pytest.mark.llama
def test_lmgym_eval_on_the_embedded_model(tmp_path):
    """Mechanics, not skill: every rollout of the real small model completes and is scored."""
    run = tmp_path / "run"
    args = '{"tasks": ["leg_counting", "basic_arithmetic"], "size": 20, "num_eval_examples": 8, "seed": 1}'
    result = invoke("eval", NAME, "-n", "4", "-r", "1", "-o", str(run), "-a", args, "-S", '{"max_tokens": 32}',
                    env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Evaluation summary" in result.stdout
    records = [orjson.loads(line) for line in Path(run / "results.jsonl").read_bytes().splitlines()]
    assert len(records) == 4
    for record in records:
        assert record["task"] in TASKS
        assert record["error"] is None or record["error"]["kind"] == "empty_response"
    scored = [r for r in records if r["error"] is None]
    assert len(scored) >= 3
    for record in scored:
        assert 0.0 <= record["metrics"]["score_answer"] <= 1.0 and isinstance(record["reward"], float)
