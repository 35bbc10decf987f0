"""EnvGroup: examples routed to their own environment, scored by its rubric, summarised per environment."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from cli_runner import invoke

import lmgym
from lmgym import OpenAIClient, Rubric, SingleTurnEnv
from lmgym.envs.group import EnvGroup, interleave
from lmgym.envs.tools import ToolEnv
from lmgym.errors import UsageError
from lmgym.eval.runner import run_eval
from lmgym.testing import ScriptedServer, last_user_text, tool_call


def shout(completion) -> float:
    return float(completion[-1]["content"].isupper())


def echo_length(completion, task, example_id) -> float:
    """Sees its own environment's view of the example (task and id), not the group's."""
    assert task == "default" and isinstance(example_id, int)
    return float(len(completion[-1]["content"]))


def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up.
    """
    return key.upper()


def make_group() -> EnvGroup:
    loud = SingleTurnEnv(eval_dataset=[{"question": f"loud {i}"} for i in range(3)], rubric=Rubric([shout]), sampling_args={"temperature": 0.1})
    count = SingleTurnEnv(eval_dataset=[{"question": f"count {i}"} for i in range(2)], rubric=Rubric([echo_length]), system_prompt="Be brief.")
    tools = ToolEnv(eval_dataset=[{"question": "tool 0"}], tools=[lookup], rubric=Rubric([shout]))
    return EnvGroup({"loud": loud, "count": count, "tools": tools})


def reply(request) -> str | dict:
    text = last_user_text(request)
    if request["messages"][-1]["role"] == "tool":
        return request["messages"][-1]["content"]
    if text.startswith("tool"):
        return {"content": None, "tool_calls": [tool_call("lookup", {"key": "found"})]}
    return text.upper() if text.startswith("loud") else "abc"


def test_interleave_is_round_robin():
    assert interleave([[1, 2, 3], ["a"], [True, False]]) == [1, "a", True, 2, False, 3]


def test_examples_are_relabelled_and_interleaved():
    group = make_group()
    ids = [e.id for e in group.get_eval_examples()]
    assert ids == ["loud/0", "count/0", "tools/0", "loud/1", "count/1", "loud/2"]
    assert [e.task for e in group.get_eval_examples(1)] == ["loud", "count", "tools"]
    assert [e.id for e in group.get_eval_examples(2)] == ["loud/0", "count/0", "tools/0", "loud/1", "count/1"]
    shuffled = group.get_eval_examples(2, seed=3)
    assert sorted(e.task for e in shuffled) == ["count", "count", "loud", "loud", "tools"] and shuffled == group.get_eval_examples(2, seed=3)
    assert group.get_eval_examples()[1].prompt[0] == {"role": "system", "content": "Be brief."}


async def test_each_example_runs_and_is_scored_in_its_own_environment(tmp_path):
    group = make_group()
    with ScriptedServer(reply=reply) as server:
        client = OpenAIClient(server.base_url)
        summary = await run_eval(group, client, model="scripted", examples=group.get_eval_examples(), rollouts_per_example=2, concurrency=4, run_dir=tmp_path)
        await client.aclose()
    records = [orjson.loads(line) for line in (tmp_path / "results.jsonl").read_bytes().splitlines()]
    by_task = {r["task"]: r for r in records}
    assert by_task["loud"]["reward"] == 1.0 and by_task["loud"]["example_id"].startswith("loud/")
    assert by_task["count"]["reward"] == 3.0 and by_task["count"]["metrics"] == {"echo_length": 3.0}
    assert by_task["tools"]["reward"] == 1.0 and by_task["tools"]["metrics"]["calls_lookup"] == 1.0
    assert by_task["tools"]["num_turns"] == 2
    loud_request = next(r for r in server.requests if last_user_text(r).startswith("loud"))
    assert loud_request["temperature"] == 0.1 and "tools" not in loud_request  # its own sampling, no one else's tools
    assert all(r["error"] is None for r in records) and len(records) == 12
    tasks = summary.to_dict()["tasks"]
    assert set(tasks) == {"loud", "count", "tools"}
    assert tasks["count"]["metrics"] == {"echo_length": 3.0} and tasks["loud"]["rollouts"] == 6
    assert "calls_lookup" in tasks["tools"]["metrics"] and "calls_lookup" not in tasks["loud"]["metrics"]


def test_one_task_has_no_per_task_breakdown():
    from lmgym.eval.summary import Summary

    summary = Summary()
    summary.add({"example_id": 0, "task": "default", "reward": 1.0, "metrics": {}, "error": None})
    assert "tasks" not in summary.to_dict()


async def test_starting_stops_what_started_when_one_fails():
    events = []

    class Recorder(SingleTurnEnv):
        def __init__(self, name, fail=False):
            super().__init__(eval_dataset=[{"question": "q"}])
            self.name, self.fail = name, fail

        async def start(self):
            if self.fail:
                raise RuntimeError("cannot start")
            events.append(f"start {self.name}")

        async def stop(self):
            events.append(f"stop {self.name}")

    group = EnvGroup({"a": Recorder("a"), "b": Recorder("b"), "c": Recorder("c", fail=True)})
    with pytest.raises(RuntimeError):
        async with group.running():
            pass
    assert events == ["start a", "start b", "stop b", "stop a"]


def test_train_and_eval_examples_of_one_id_stay_apart():
    group = lmgym.load_environment("arithmetic,reverse-text", arithmetic={"num_examples": 3, "num_eval_examples": 3})
    for example in group.dataset + group.eval_dataset:
        env, original = group.environment_of(example)
        own = env.dataset if "/train/" in str(example.id) else env.eval_dataset
        assert original in own and original.prompt == example.prompt and original.answer == example.answer
    assert group.dataset[0].id == "arithmetic/train/0" and group.eval_dataset[0].id == "arithmetic/0"


def test_registry_builds_a_group_from_comma_separated_names():
    group = lmgym.load_environment("arithmetic,reverse-text", arithmetic={"num_eval_examples": 4}, **{"reverse-text": {"num_eval_examples": 2}})
    assert isinstance(group, EnvGroup) and list(group.envs) == ["arithmetic", "reverse-text"]
    assert [e.task for e in group.get_eval_examples()] == ["arithmetic", "reverse-text"] * 2 + ["arithmetic"] * 2
    with pytest.raises(UsageError, match="arguments are given per environment"):
        lmgym.load_environment("arithmetic,reverse-text", num_eval_examples=3)
    with pytest.raises(UsageError, match="must be JSON objects"):
        lmgym.load_environment("arithmetic,reverse-text", arithmetic=3)


def sums_and_reversals(request) -> str:
    text = last_user_text(request)
    if text.startswith("Reverse"):
        return f"<answer>{text.split(chr(10), 1)[1][::-1]}</answer>"
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    return f"<answer>{numbers[0]}</answer>"  # wrong for sums (unless the other term is 0)


def test_cli_prints_a_per_environment_table(tmp_path):
    with ScriptedServer(reply=sums_and_reversals) as server:
        result = invoke("eval", "arithmetic,reverse-text", "-b", server.base_url, "-m", "scripted",
                        "-n", "3", "-r", "1", "-o", str(tmp_path / "run"), "-a", '{"reverse-text": {"num_eval_examples": 5}}',
                        env={"OPENAI_API_KEY": "sk-test", "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "Per task" in result.stdout
    header = next(line for line in result.stdout.splitlines() if "arithmetic" in line and "reverse-text" in line)
    assert header.index("arithmetic") < header.index("reverse-text")
    metadata = orjson.loads(Path(tmp_path / "run" / "metadata.json").read_bytes())
    tasks = metadata["summary"]["tasks"]
    assert tasks["reverse-text"]["metrics"]["lcs_ratio"] == 1.0 and "correct_answer" not in tasks["reverse-text"]["metrics"]
    assert tasks["arithmetic"]["rollouts"] == 3 and tasks["reverse-text"]["rollouts"] == 3
