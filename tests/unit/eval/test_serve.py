"""`OpenEnvApp` (`lmgym serve`): lmgym environments over the OpenEnv protocol, served on
loopback and spoken to with a WebSocket client as OpenEnv's clients speak. (OpenEnv's own
client plays against `lmgym serve` in tests/e2e/test_openenv.py.)"""

from __future__ import annotations

import json

import orjson
import pytest
from websockets.asyncio.client import connect

from lmgym.clients.http import http
from lmgym.eval.serve import OpenEnvApp
from lmgym.registry import load_environment
from lmgym.testing import BackgroundServer, tool_call


@pytest.fixture(scope="module")
def served():
    """arithmetic (single turn) and wordle (multi-turn), each served by its own app."""
    servers = {name: BackgroundServer(OpenEnvApp(load_environment(name), name), lifespan="on", ws="websockets-sansio").start()
               for name in ("arithmetic", "wordle", "calculator")}
    yield {name: server.url for name, server in servers.items()}
    for server in servers.values():
        server.stop()


async def talk(url: str, *messages: dict) -> list[dict]:
    """Send each message on one session; the answers, in order."""
    answers = []
    async with connect(url.replace("http", "ws", 1) + "/ws") as ws:
        for message in messages:
            await ws.send(json.dumps(message))
            answers.append(json.loads(await ws.recv()))
    return answers


async def test_a_single_turn_episode_is_the_example_then_the_rubric_score(served):
    env = load_environment("arithmetic")
    example = env.eval_dataset[5 % len(env.eval_dataset)]
    reset, = await talk(served["arithmetic"], {"type": "reset", "data": {"seed": 5}})
    assert reset["type"] == "observation" and reset["data"]["done"] is False and reset["data"]["reward"] is None
    assert reset["data"]["observation"]["messages"] == example.prompt
    answer = f"<answer>{example.answer}</answer>"
    _, done, state = await talk(served["arithmetic"], {"type": "reset", "data": {"seed": 5}},
                                {"type": "step", "data": {"content": answer}}, {"type": "state"})
    assert done["data"]["done"] is True and done["data"]["reward"] == pytest.approx(1.2)
    assert done["data"]["observation"]["metrics"] == {"correct_answer": 1.0, "format_reward": 1.0}
    assert state["data"] == {"episode_id": None, "step_count": 1, "example_id": example.id}
    wrong = await talk(served["arithmetic"], {"type": "reset", "data": {"seed": 5}}, {"type": "step", "data": {"content": "<answer>-1</answer>"}})
    assert wrong[1]["data"]["reward"] == pytest.approx(0.2)


async def test_a_multi_turn_game_sends_only_the_new_messages_each_step(served):
    answers = await talk(served["wordle"], {"type": "reset", "data": {"example_id": 0}},
                         {"type": "step", "data": {"content": "<guess>crane</guess>"}},
                         {"type": "step", "data": {"content": "<guess>slate</guess>"}})
    first, second, third = (a["data"] for a in answers)
    assert [m["role"] for m in first["observation"]["messages"]][-1] == "user"
    for reply in (second, third):
        assert reply["done"] is False and [m["role"] for m in reply["observation"]["messages"]] == ["user"]
    assert "Guess 1: C R A N E" in second["observation"]["messages"][0]["content"]
    assert "Guess 2: S L A T E" in third["observation"]["messages"][0]["content"]


async def test_tool_calls_are_run_by_the_environment_and_their_results_observed(served):
    reset, = await talk(served["calculator"], {"type": "reset", "data": {"seed": 0}})
    assert reset["data"]["observation"]["tools"][0]["function"]["name"] == "calculate"
    answers = await talk(served["calculator"], {"type": "reset", "data": {"seed": 0}},
                         {"type": "step", "data": {"content": None, "tool_calls": [tool_call("calculate", {"expression": "6 * 7"}, "c1")]}})
    assert answers[1]["data"]["observation"]["messages"] == [{"role": "tool", "tool_call_id": "c1", "content": "42"}]


@pytest.mark.parametrize("message, code, text", [
    ({"type": "step", "data": {"content": "hi"}}, "VALIDATION_ERROR", "send a reset first"),
    ({"type": "dance"}, "UNKNOWN_TYPE", "dance"),
    ({"type": "reset", "data": {"example_id": "nope"}}, "VALIDATION_ERROR", "no example with id 'nope'"),
])
async def test_messages_that_cannot_be_served_get_an_error_and_the_session_lives_on(served, message, code, text):
    error, after = await talk(served["arithmetic"], message, {"type": "state"})
    assert error["type"] == "error" and error["data"]["code"] == code and text in error["data"]["message"]
    assert after["type"] == "state"


async def test_an_action_that_is_not_an_assistant_message_is_refused_naming_the_field(served):
    answers = await talk(served["arithmetic"], {"type": "reset", "data": {}}, {"type": "step", "data": {"text": "4"}},
                         {"type": "step", "data": {"content": "<answer>0</answer>"}})
    assert answers[1]["type"] == "error" and "unknown action fields ['text']" in answers[1]["data"]["message"]
    assert answers[2]["data"]["done"] is True  # the episode waited for a proper reply


async def test_the_http_routes_answer_as_openenv_does(served):
    url = served["arithmetic"]
    async with http.AsyncClient() as client:
        assert (await client.get(f"{url}/health")).json() == {"status": "healthy"}
        schema = (await client.get(f"{url}/schema")).json()
        assert set(schema) == {"action", "observation", "state"} and "content" in schema["action"]["properties"]
        reset = await client.post(f"{url}/reset", content=orjson.dumps({"seed": 1}))
        assert reset.status_code == 200 and reset.json()["observation"]["messages"][-1]["role"] == "user"
        step = await client.post(f"{url}/step", content=b"{}")
        assert step.status_code == 409 and "/ws" in step.json()["detail"]
        assert (await client.get(f"{url}/nothing")).status_code == 404
