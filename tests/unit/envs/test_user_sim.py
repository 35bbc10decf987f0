"""UserSimEnv: a scripted policy and a scripted simulated user, both real HTTP on loopback.

Roles are flipped for the simulator, tool traffic and the private goal stay on their own
side, the sentinels end the episode (and are stripped), the turn budget ends it too, a
failed simulator request is a recorded rollout error, an unreachable one stops the run,
and each event loop (one per training step) gets its own simulator client.
"""

from __future__ import annotations

import asyncio

import pytest
from scripted import rollout_on

from lmgym import OpenAIClient, Rubric
from lmgym.embedded import free_port
from lmgym.envs.user_sim import GREETING, SimulatedUser, UserSimEnv, parse_user_reply, user_view
from lmgym.errors import DatasetError, ModelConnectionError
from lmgym.eval.runner import run_eval
from lmgym.testing import ScriptedServer, tool_call

GOAL = "Learn the secret word of vault 7, then say goodbye."
PERSONA = "Ada, a locksmith who writes tersely."
OPENING = "Hi, I need the word for one of my vaults."
ROWS = [{"prompt": [{"role": "user", "content": OPENING}], "info": {"persona": PERSONA, "user_goal": GOAL}}]


def peek(vault: int) -> str:
    """Read the secret word of a vault.

    Args:
        vault: the vault number.
    """
    return f"word=heliotrope (vault {vault}, clearance level 3)"


def scripted(steps: list, count_role: str, offset: int = 0):
    """A reply function answering with steps[k], k = messages of `count_role` in the request
    minus `offset`; the last step repeats."""

    def reply(request):
        k = sum(m["role"] == count_role for m in request["messages"]) - offset
        return steps[min(k, len(steps) - 1)]

    return reply


def agent(*steps):
    return scripted(list(steps), "assistant")


def user(*steps):
    return scripted(list(steps), "assistant", offset=1)  # its own opening is the first assistant message


def goal_and_transcript(info, completion, state) -> float:
    """The rubric sees the private goal and the whole transcript."""
    return float(info["user_goal"] == GOAL and any(m["role"] == "tool" for m in completion))


def make_env(base_url: str, *, max_turns: int = 8, max_retries: int = 0, rows=ROWS) -> UserSimEnv:
    sim = SimulatedUser("user-model", base_url=base_url, max_retries=max_retries)
    return UserSimEnv(eval_dataset=rows, user=sim, tools=[peek], system_prompt="You are a vault assistant.",
                      rubric=Rubric([goal_and_transcript]), max_turns=max_turns)


async def run_one(env: UserSimEnv, policy_url: str):
    """One scored conversation of the policy at `policy_url` with the simulated user."""
    return await rollout_on(policy_url, env, model="policy")


# -- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, text, outcome", [
    ("Great, thanks! [DONE]", "Great, thanks!", "satisfied"),
    ("[done]", "", "satisfied"),
    ("This is going nowhere. [GIVE UP]", "This is going nowhere.", "gave_up"),
    ("ok [ give_up ]", "ok", "gave_up"),
    ("Fine [DONE] ... actually no. [GIVE UP]", "Fine  ... actually no.", "gave_up"),
    ("Which vault do you mean? I am not done yet.", "Which vault do you mean? I am not done yet.", None),
])
def test_sentinels_are_read_and_stripped(raw, text, outcome):
    assert parse_user_reply(raw) == (text, outcome)


def test_the_simulator_sees_the_chat_with_roles_flipped_and_no_tool_traffic():
    messages = [
        {"role": "system", "content": "secret agent instructions"},
        {"role": "user", "content": OPENING},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [tool_call("peek", {"vault": 7})]},
        {"role": "tool", "tool_call_id": "call_peek", "content": "clearance level 3"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call("peek", {"vault": 8})]},
        {"role": "tool", "tool_call_id": "call_peek", "content": "clearance level 4"},
        {"role": "assistant", "content": "It is heliotrope."},
        {"role": "user", "content": "Thanks."},
        {"role": "assistant", "content": ""},
    ]
    assert user_view(messages) == [
        {"role": "user", "content": GREETING},
        {"role": "assistant", "content": OPENING},
        {"role": "user", "content": "Let me look.\n\nIt is heliotrope."},  # one side's messages joined
        {"role": "assistant", "content": "Thanks."},
        {"role": "user", "content": "(empty message)"},
    ]


def test_examples_need_an_opening_and_the_goal_fields():
    sim = SimulatedUser("u")
    with pytest.raises(DatasetError, match=r"names \['persona', 'user_goal'\].*it has \[\]"):
        UserSimEnv(eval_dataset=[{"question": "hi"}], user=sim)
    with pytest.raises(DatasetError, match="must end with the simulated user's opening"):
        UserSimEnv(eval_dataset=[{"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "info": ROWS[0]["info"]}], user=sim)


# -- rollouts over HTTP -----------------------------------------------------------------------


async def test_a_satisfied_user_ends_the_episode_and_each_side_sees_only_its_own():
    policy = agent("Which vault?", {"content": None, "tool_calls": [tool_call("peek", {"vault": 7})]}, "The word is heliotrope.")
    with ScriptedServer(policy) as policy_server, ScriptedServer(user("Vault 7, please.", "Perfect, thank you! [DONE]")) as user_server:
        rollout = await run_one(make_env(user_server.base_url), policy_server.base_url)
    assert rollout.error is None and rollout.state["stop_reason"] == "done"
    assert rollout.state["user_outcome"] == "satisfied" and rollout.state["user_turns"] == 2
    assert [(m["role"], m.get("content")) for m in rollout.completion if m["role"] != "tool"] == [
        ("assistant", "Which vault?"), ("user", "Vault 7, please."), ("assistant", None),
        ("assistant", "The word is heliotrope."), ("user", "Perfect, thank you!"),  # sentinel stripped
    ]
    # the simulator: its persona and goal in its system prompt, roles flipped, no tool traffic
    first, last = user_server.requests
    assert first["model"] == "user-model" and first["temperature"] == 0.7 and "tools" not in first
    assert first["messages"][0]["role"] == "system" and GOAL in first["messages"][0]["content"] and PERSONA in first["messages"][0]["content"]
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert last["messages"][-1]["content"] == "The word is heliotrope."
    assert not any("clearance" in str(m) or "peek" in str(m) or "vault assistant" in str(m) for r in user_server.requests for m in r["messages"])
    # the policy: never the goal, the persona or the sentinel; it has the tools
    assert all(GOAL not in str(r) and PERSONA not in str(r) and "[DONE]" not in str(r) for r in policy_server.requests)
    assert policy_server.requests[0]["tools"][0]["function"]["name"] == "peek"
    # the rubric sees the goal and the whole transcript
    assert rollout.metrics == {"goal_and_transcript": 1.0, "tool_calls": 1.0, "tool_errors": 0.0, "calls_peek": 1.0, "user_satisfied": 1.0, "user_gave_up": 0.0}
    assert rollout.reward == 1.0 and rollout.state["user_usage"]["requests"] == 2


async def test_a_user_who_gives_up_ends_the_episode():
    with ScriptedServer(agent("I cannot help with vaults.")) as policy_server, ScriptedServer(user("Useless. [GIVE UP]")) as user_server:
        rollout = await run_one(make_env(user_server.base_url), policy_server.base_url)
    assert rollout.state["user_outcome"] == "gave_up" and len(rollout.turns) == 1
    assert rollout.completion[-1] == {"role": "user", "content": "Useless."}
    assert rollout.metrics["user_gave_up"] == 1.0 and rollout.metrics["user_satisfied"] == 0.0


async def test_a_bare_sentinel_adds_no_message():
    with ScriptedServer(agent("Here you go.")) as policy_server, ScriptedServer(user("[DONE]")) as user_server:
        rollout = await run_one(make_env(user_server.base_url), policy_server.base_url)
    assert rollout.state["user_outcome"] == "satisfied" and [m["role"] for m in rollout.completion] == ["assistant"]


async def test_the_turn_budget_ends_a_conversation_that_goes_on():
    with ScriptedServer(agent("Hmm?")) as policy_server, ScriptedServer(user("Please, the word.")) as user_server:
        rollout = await run_one(make_env(user_server.base_url, max_turns=3), policy_server.base_url)
    assert rollout.state["stop_reason"] == "max_turns" and rollout.state["user_outcome"] is None
    assert len(rollout.turns) == 3 and len(user_server.requests) == 3  # the last reply is answered too
    assert rollout.metrics["user_satisfied"] == 0.0 and rollout.metrics["user_gave_up"] == 0.0


async def test_a_failing_simulator_is_a_recorded_rollout_error_not_a_zero():
    with ScriptedServer(agent("Which vault?")) as policy_server, ScriptedServer(user("Vault 7.")) as user_server:
        user_server.fail_next(500)
        rollout = await run_one(make_env(user_server.base_url), policy_server.base_url)
    assert rollout.error is not None and rollout.error.kind == "server"
    assert rollout.error.message.startswith("user simulator 'user-model': server error (HTTP 500)")
    assert rollout.reward is None and rollout.metrics == {}


async def test_an_unreachable_simulator_stops_the_run(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # a port nobody listens on
    env = make_env(dead)
    with ScriptedServer(agent("Which vault?")) as policy_server:
        client = OpenAIClient(policy_server.base_url)
        with pytest.raises(ModelConnectionError, match="user simulator 'user-model': cannot reach"):
            await run_eval(env, client, model="policy", examples=env.eval_dataset * 3, rollouts_per_example=2, concurrency=2, run_dir=tmp_path)
        await client.aclose()


def test_each_event_loop_gets_its_own_simulator_client():
    """Training runs each step in a fresh event loop; `stop` closes that loop's client."""
    policy = agent("Which vault?", "It is heliotrope.")
    with ScriptedServer(policy) as policy_server, ScriptedServer(user("Vault 7.", "Thanks! [DONE]")) as user_server:
        env = make_env(user_server.base_url)
        rollouts = [asyncio.run(run_one(env, policy_server.base_url)) for _ in range(2)]
    assert all(r.error is None and r.state["user_outcome"] == "satisfied" for r in rollouts)
    assert len(env.user._clients._loops) == 0  # every loop's client was closed by stop()
