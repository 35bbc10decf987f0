"""`EvalRun`, the evaluation lifecycle as a library object, and `EvalConfig`'s resume rules."""

from __future__ import annotations

import asyncio
import re
import time

import orjson
import pytest

from lmgym import OpenAIClient, Rubric, SingleTurnEnv, errors
from lmgym.config import validate
from lmgym.eval.config import EvalConfig, resolve_config
from lmgym.eval.run import EvalRun
from lmgym.testing import ScriptedServer, last_user_text


def sums(n: int = 4) -> SingleTurnEnv:
    rows = [{"question": f"{i}+{i}", "answer": str(2 * i)} for i in range(n)]
    return SingleTurnEnv(eval_dataset=rows, rubric=Rubric([lambda completion, answer: float(completion[-1]["content"] == answer)]))


def solve(request) -> str:
    a, b = map(int, re.findall(r"\d+", last_user_text(request)))
    return str(a + b)


def metadata(run_dir) -> dict:
    return orjson.loads((run_dir / "metadata.json").read_bytes())


async def test_a_run_writes_its_lifecycle_and_summary(tmp_path):
    run = EvalRun(sums(), EvalConfig(env="sums", model="m", rollouts_per_example=2), tmp_path)
    with ScriptedServer(solve) as server:
        client = OpenAIClient(server.base_url)
        summary = await run.run(client)
        await client.aclose()
    saved = metadata(tmp_path)
    assert summary.rollouts == 8 and saved["status"] == "completed" and run.status == "completed"
    assert saved["summary"]["reward_mean"] == 1.0 and saved["config"]["pass_metric"] == "reward"
    assert saved["finished_at"] >= saved["started_at"] and saved["wall_time_s"] > 0


async def test_a_cancelled_run_is_interrupted_and_a_failed_one_failed(tmp_path):
    slow = EvalRun(sums(), EvalConfig(env="sums", model="m", concurrency=1), tmp_path / "slow")
    with ScriptedServer(lambda request: time.sleep(0.3) or "0") as server:
        client = OpenAIClient(server.base_url)
        task = asyncio.create_task(slow.run(client))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await client.aclose()
    assert metadata(tmp_path / "slow")["status"] == "interrupted"

    broken = EvalRun(sums(), EvalConfig(env="sums", model="m"), tmp_path / "broken")
    with ScriptedServer(solve, api_key="sk-right") as server:
        client = OpenAIClient(server.base_url, "sk-wrong")
        with pytest.raises(errors.ModelAuthError):
            await broken.run(client)
        await client.aclose()
    assert metadata(tmp_path / "broken")["status"] == "failed"


def test_settings_mistakes_are_one_line_naming_the_setting():
    with pytest.raises(errors.UsageError, match=r"concurrency = 0: input should be greater than or equal to 1"):
        validate(EvalConfig, {"env": "x", "concurrency": 0})
    with pytest.raises(errors.UsageError, match="timeout = inf"):
        validate(EvalConfig, {"env": "x", "timeout": float("inf")})
    with pytest.raises(errors.UsageError, match="bogus"):
        validate(EvalConfig, {"env": "x", "bogus": 1})


def test_resume_keeps_the_defining_settings_and_takes_new_connection_settings(tmp_path):
    stored = validate(EvalConfig, {"env": "x", "model": "m", "rollouts_per_example": 2}).model_dump()
    resumed = resolve_config({"concurrency": 4, "env": None}, stored, tmp_path)
    assert resumed.concurrency == 4 and resumed.rollouts_per_example == 2
    with pytest.raises(errors.UsageError, match=r"rollouts_per_example=5 \(run has 2\)"):
        resolve_config({"rollouts_per_example": 5}, stored, tmp_path)


def test_an_environment_declaring_its_pass_criterion_is_used_unless_overridden(tmp_path):
    env = sums()
    env.pass_metric, env.pass_threshold = "exact", 0.5
    assert EvalRun(env, EvalConfig(env="sums"), tmp_path).config.pass_metric == "exact"
    chosen = EvalRun(env, EvalConfig(env="sums", pass_metric="reward", pass_threshold=1.0), tmp_path).config
    assert (chosen.pass_metric, chosen.pass_threshold) == ("reward", 1.0)


async def test_asking_for_more_examples_than_the_set_has_is_said_in_the_metadata(tmp_path):
    run = EvalRun(sums(4), EvalConfig(env="sums", model="m", num_examples=500, rollouts_per_example=1), tmp_path / "more")
    exact = EvalRun(sums(4), EvalConfig(env="sums", model="m", num_examples=4, rollouts_per_example=1), tmp_path / "exact")
    assert run.fewer_note == "4 examples, not 500: the evaluation set has no more" and exact.fewer_note is None
    with ScriptedServer(solve) as server:
        client = OpenAIClient(server.base_url)
        await run.run(client)
        await exact.run(client)
        await client.aclose()
    saved, plain = metadata(tmp_path / "more"), metadata(tmp_path / "exact")
    assert saved["examples"] == 4 and saved["notes"] == [run.fewer_note] and saved["summary"]["rollouts"] == 4
    assert plain["examples"] == 4 and "notes" not in plain
