"""The environment loop and dataset normalisation, against the scripted server."""

from __future__ import annotations

import asyncio

import datasets
import pytest

from lmgym import MultiTurnEnv, OpenAIClient, Rubric, SingleTurnEnv, errors
from lmgym.envs import to_examples
from lmgym.testing import ScriptedServer, last_user_text


def test_question_column_becomes_a_user_message_after_system_and_few_shot():
    shots = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    dataset = datasets.Dataset.from_list([{"question": "2+2?", "answer": "4", "level": 3}])
    [example] = to_examples(dataset, system_prompt="Be brief.", few_shot=shots)
    assert example.prompt == [{"role": "system", "content": "Be brief."}, *shots, {"role": "user", "content": "2+2?"}]
    assert example.answer == "4" and example.info == {"level": 3} and example.id == 0


def test_prompt_column_of_messages_is_kept():
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "answer": "x", "task": "greet", "id": "a"}]
    [example] = to_examples(rows)
    assert example.prompt == [{"role": "user", "content": "hi"}] and example.task == "greet" and example.id == "a"


def test_dataset_without_prompt_or_question_names_its_columns():
    dataset = datasets.Dataset.from_list([{"text": "hi", "label": 1}])
    with pytest.raises(errors.DatasetError, match="columns are: text, label"):
        SingleTurnEnv(eval_dataset=dataset)


def test_prompt_must_be_messages():
    with pytest.raises(errors.DatasetError, match="row 0"):
        to_examples([{"prompt": ["just a string"]}])


class GuessEnv(MultiTurnEnv):
    """The model guesses; the environment says higher/lower until it hits the target."""

    async def setup_state(self, state, example):
        state["target"] = int(example.answer)
        state["feedback"] = []

    async def is_done(self, messages, state):
        return state.get("solved", False)

    async def env_response(self, messages, state):
        guess = int(messages[-1]["content"])
        if guess == state["target"]:
            state["solved"] = True
            reply = "correct"
        else:
            reply = "higher" if guess < state["target"] else "lower"
        state["feedback"].append(reply)
        return [{"role": "user", "content": reply}]


def counting_reply(request) -> str:
    return str(sum(1 for m in request["messages"] if m["role"] == "assistant") + 1)


async def test_multi_turn_loop_stops_when_done():
    env = GuessEnv(eval_dataset=[{"question": "guess", "answer": "3"}], max_turns=10)
    with ScriptedServer(reply=counting_reply) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0])
        await client.aclose()
    assert [t.assistant["content"] for t in rollout.turns] == ["1", "2", "3"]
    assert rollout.state["feedback"] == ["higher", "higher", "correct"]
    assert rollout.state["stop_reason"] == "done" and rollout.error is None
    assert rollout.usage.requests == 3


async def test_last_turn_still_gets_the_environment_response():
    """The turn budget ends after the model's 2nd reply; that reply is still answered."""
    env = GuessEnv(eval_dataset=[{"question": "guess", "answer": "9"}], max_turns=2)
    with ScriptedServer(reply=counting_reply) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0])
        await client.aclose()
    assert rollout.state["stop_reason"] == "max_turns"
    assert rollout.state["feedback"] == ["higher", "higher"]
    assert rollout.completion[-1] == {"role": "user", "content": "higher"}


async def test_environment_hook_failure_is_recorded():
    class Broken(GuessEnv):
        async def env_response(self, messages, state):
            raise RuntimeError("tool crashed")

    env = Broken(eval_dataset=[{"question": "guess", "answer": "9"}])
    with ScriptedServer(reply="1") as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0])
        await client.aclose()
    assert rollout.error.kind == "environment" and "tool crashed" in rollout.error.message
    assert len(rollout.turns) == 1


async def test_hooks_may_be_plain_functions():
    class PlainGuess(MultiTurnEnv):
        def setup_state(self, state, example):
            state["target"] = int(example.answer)

        def is_done(self, messages, state):
            return messages[-1]["content"] == str(state["target"])

        def env_response(self, messages, state):
            return [{"role": "user", "content": "higher"}]

        def teardown_state(self, state):
            state["closed"] = True

    env = PlainGuess(eval_dataset=[{"question": "guess", "answer": "2"}])
    with ScriptedServer(reply=counting_reply) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0])
        await client.aclose()
    assert rollout.error is None and [t.assistant["content"] for t in rollout.turns] == ["1", "2"]
    assert rollout.state["closed"] is True


@pytest.mark.parametrize("reply", [None, "higher", {"role": "user", "content": "x"}, ["higher"]])
async def test_env_response_of_the_wrong_type_is_the_rollouts_error(reply):
    class Wrong(GuessEnv):
        async def env_response(self, messages, state):
            return reply

    env = Wrong(eval_dataset=[{"question": "guess", "answer": "9"}] * 3)
    with ScriptedServer(reply="1") as server:
        client = OpenAIClient(server.base_url)
        rollouts = await asyncio.gather(*(env.rollout(client, "m", e) for e in env.eval_dataset))
        await client.aclose()
    for rollout in rollouts:
        assert rollout.error.kind == "environment"
        assert "Wrong.env_response must return a list of messages" in rollout.error.message


async def test_single_turn_env_sends_sampling_args_and_stops():
    env = SingleTurnEnv(
        eval_dataset=[{"question": "2+2?", "answer": "4"}],
        sampling_args={"temperature": 0.1, "max_tokens": 8},
        rubric=Rubric([lambda completion, answer: float(completion[-1]["content"] == answer)]),
    )
    with ScriptedServer(reply=lambda r: "4" if "2+2" in last_user_text(r) else "?") as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0], sampling_args={"max_tokens": 16})
        await client.aclose()
    await env.score_group([rollout])
    assert rollout.reward == 1.0 and len(rollout.turns) == 1
    assert server.requests[0]["temperature"] == 0.1 and server.requests[0]["max_tokens"] == 16


def test_eval_examples_take_n_and_shuffle_with_seed():
    env = SingleTurnEnv(eval_dataset=[{"question": str(i)} for i in range(20)])
    assert [e.id for e in env.get_eval_examples(3)] == [0, 1, 2]
    shuffled = [e.id for e in env.get_eval_examples(5, seed=1)]
    assert shuffled == [e.id for e in env.get_eval_examples(5, seed=1)] and shuffled != [0, 1, 2, 3, 4]
    assert len(env.get_eval_examples(-1)) == 20


def test_a_rows_own_system_message_wins_and_few_shot_follows_it():
    shots = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]
    rows = [{"prompt": [{"role": "system", "content": "Own."}, {"role": "user", "content": "q"}]}, {"question": "q"}]
    own, plain = to_examples(rows, system_prompt="Env.", few_shot=shots)
    assert own.prompt == [{"role": "system", "content": "Own."}, *shots, {"role": "user", "content": "q"}]
    assert plain.prompt == [{"role": "system", "content": "Env."}, *shots, {"role": "user", "content": "q"}]
    [bare] = to_examples([{"question": "q"}], few_shot=shots)
    assert bare.prompt == [*shots, {"role": "user", "content": "q"}]
