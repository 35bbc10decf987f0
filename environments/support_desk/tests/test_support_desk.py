"""support-desk: the shop database is consistent, every task can be done within the policy
(and every forbidden request breaks it), the tools refuse only what the data forbids, and
over real HTTP a scripted agent that does the right thing for a scripted customer earns
1 + politeness, while one that breaks the policy earns little."""

from __future__ import annotations

import copy
import inspect
import json
import re

import pytest
from scripted import run_scripted

import lmgym
from lmgym.errors import UsageError
from lmgym.registry import available_environments
from lmgym.testing import ScriptedServer, last_user_text, tool_call


@pytest.fixture(scope="module")
def sd():
    """The environment's package, for its helpers."""
    return inspect.getmodule(available_environments()["support-desk"].load())


@pytest.fixture()
def db(sd):
    return copy.deepcopy(sd.DATABASE)


def audit(email: str = "maria.lopez@example.com") -> dict:
    return {"customer_email": email, "actions": []}


# -- data -------------------------------------------------------------------------------------


def test_the_database_is_consistent(sd):
    db = sd.DATABASE
    customers = {c["id"]: c for c in db["customers"]}
    prices = {p["sku"]: p["price"] for p in db["products"]}
    assert len({c["email"] for c in db["customers"]}) == len(customers) >= 10
    for order in db["orders"]:
        assert order["customer_id"] in customers, order["id"]
        assert order["total"] == sum(i["quantity"] * i["price"] for i in order["items"]), order["id"]
        assert all(i["price"] == prices[i["sku"]] for i in order["items"]), order["id"]
        assert (order["delivered_on"] is not None) == (order["status"] in ("delivered", "refunded")), order["id"]
        assert order["placed_on"] <= (order["delivered_on"] or db["today"]) <= db["today"], order["id"]
    refunded = {r["order_id"] for r in db["refunds"]}
    assert refunded == {o["id"] for o in db["orders"] if o["status"] == "refunded"}


def test_every_task_is_doable_within_the_policy_and_every_forbidden_request_breaks_it(sd):
    desk, rows = sd.desk, sd.load_tasks()
    assert len(rows) >= 30 and len({r["id"] for r in rows}) == len(rows)
    kinds = {r["task"] for r in rows}
    assert {"refund", "refund-refused", "address", "address-refused", "cancel", "cancel-refused", "combo", "identity"} <= kinds
    for row in rows:
        info, db = row["info"], copy.deepcopy(sd.DATABASE)
        assert info["actions"] or info["requested"], row["id"]
        for action in info["requested"]:  # judged on the database as the customer finds it
            assert desk.policy_problem(db, action["tool"], action["args"], info["customer_email"]), (row["id"], action)
        for action in info["actions"]:
            assert desk.policy_problem(db, action["tool"], action["args"], info["customer_email"]) is None, (row["id"], action)
            db = desk.apply(db, [action], info["customer_email"])
        assert (desk.digest(db) != desk.digest(sd.DATABASE)) == bool(info["actions"]), row["id"]
        for action in [*info["actions"], *info["requested"]]:  # the customer knows what to ask for
            assert str(action["args"]["order_id"]) in info["user_goal"], row["id"]
            if action["tool"] == "update_address":
                assert action["args"]["street"] in info["user_goal"], row["id"]
        assert info["customer_email"] in info["user_goal"] and info["customer_email"] not in row["prompt"][0]["content"]


def test_the_split_and_the_agent_never_sees_the_goal(sd):
    env = lmgym.load_environment("support-desk", user_model="u")
    assert len(env.dataset) + len(env.eval_dataset) == len(sd.load_tasks()) and len(env.eval_dataset) >= 10
    for example in [*env.dataset, *env.eval_dataset]:
        assert [m["role"] for m in example.prompt] == ["system", "user"]
        assert example.info["user_goal"] not in json.dumps(example.prompt)


# -- tools and policy --------------------------------------------------------------------------


def test_lookups(sd, db):
    desk = sd.desk
    customer = desk.find_customer(" Maria.Lopez@example.com ", db=db)
    assert customer["id"] == 1 and [o["id"] for o in customer["orders"]] == [1001, 1002, 1025]
    order = desk.get_order(1014, db=db)
    assert [i["name"] for i in order["items"]] == ["Electric kettle", "Ceramic mug set"] and order["refunds"] == []
    assert desk.get_order(1021, db=db)["refunds"][0]["id"] == "R1"
    with pytest.raises(LookupError, match="no customer"):
        desk.find_customer("nobody@example.com", db=db)
    with pytest.raises(LookupError, match="no order 999"):
        desk.get_order(999, db=db)


def test_writes_change_the_database_and_refuse_what_the_data_forbids(sd, db):
    desk, log = sd.desk, audit()
    assert desk.issue_refund(1001, "cracked", db=db, audit=log) == "Refunded 39.00 for order 1001 (refund R2)."
    assert desk.find_order(db, 1001)["status"] == "refunded" and db["refunds"][-1] == {"id": "R2", "order_id": 1001, "amount": 39.0, "reason": "cracked", "date": "2025-06-15"}
    desk.update_address(1025, "50 Station Road", "Brookfield", "40125", db=db, audit=log)
    assert desk.find_order(db, 1025)["shipping_address"]["street"] == "50 Station Road"
    desk.cancel_order(1025, db=db, audit=log)
    assert desk.find_order(db, 1025)["status"] == "cancelled"
    assert [a["policy_problem"] for a in log["actions"]] == [None, None, None]
    for write, args, message in [
        (desk.issue_refund, (1001, "again"), "refunded and cannot be refunded"),
        (desk.issue_refund, (1027, "x"), "cancelled and cannot be refunded"),
        (desk.cancel_order, (1002,), "delivered and cannot be cancelled"),
        (desk.update_address, (1002, "a", "b", "c"), "address can no longer change"),
    ]:
        with pytest.raises(ValueError, match=message):
            write(*args, db=db, audit=log)
    assert len(log["actions"]) == 3  # refused writes are not audited


@pytest.mark.parametrize("tool, args, email, problem", [
    ("issue_refund", {"order_id": 1009}, "chen.wei@example.com", None),  # delivered exactly 30 days ago
    ("issue_refund", {"order_id": 1008}, "jonas.berg@example.com", "delivered 32 days ago, more than 30"),
    ("issue_refund", {"order_id": 1011}, "olivia.brown@example.com", "is shipped; only delivered orders"),
    ("cancel_order", {"order_id": 1015}, "lena.fischer@example.com", "is shipped; only processing orders"),
    ("update_address", {"order_id": 1017}, "pablo.ruiz@example.com", "not on pablo.ruiz@example.com's account"),
    ("cancel_order", {"order_id": 1020}, "daniel.kim@example.com", "no account has the email"),
])
def test_policy(sd, tool, args, email, problem):
    found = sd.desk.policy_problem(sd.DATABASE, tool, args, email)
    assert found is None if problem is None else problem in found


def test_a_write_against_the_policy_is_allowed_but_audited(sd, db):
    log = audit("tom.becker@example.com")
    sd.desk.issue_refund(1003, "crackling", db=db, audit=log)
    assert "delivered 51 days ago" in log["actions"][0]["policy_problem"]


def test_the_final_state_ignores_refund_reasons_and_address_formatting(sd):
    desk = sd.desk
    a = desk.apply(sd.DATABASE, [{"tool": "issue_refund", "args": {"order_id": 1001, "reason": "broken"}},
                                 {"tool": "update_address", "args": {"order_id": 1025, "street": "50 Station Road", "city": "Brookfield", "postcode": "40125"}}])
    b = desk.apply(sd.DATABASE, [{"tool": "issue_refund", "args": {"order_id": 1001, "reason": "cracked base"}},
                                 {"tool": "update_address", "args": {"order_id": 1025, "street": "50, station road.", "city": "BROOKFIELD", "postcode": "40125"}}])
    c = desk.apply(sd.DATABASE, [{"tool": "issue_refund", "args": {"order_id": 1001, "reason": "broken"}},
                                 {"tool": "update_address", "args": {"order_id": 1025, "street": "51 Station Road", "city": "Brookfield", "postcode": "40125"}}])
    assert desk.digest(a) == desk.digest(b) != desk.digest(c)
    assert desk.apply(sd.DATABASE, []) == sd.DATABASE and desk.apply(sd.DATABASE, []) is not sd.DATABASE


def test_the_model_sees_five_tools_without_the_hidden_arguments():
    env = lmgym.load_environment("support-desk", user_model="u")
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in env.tools}
    assert list(schemas) == ["find_customer", "get_order", "issue_refund", "update_address", "cancel_order"]
    assert list(schemas["update_address"]["properties"]) == ["order_id", "street", "city", "postcode"]
    assert not any({"db", "audit"} & set(p["properties"]) for p in schemas.values())


def test_the_customer_model_must_be_named():
    with pytest.raises(UsageError, match="customer is played by a model"):
        lmgym.load_environment("support-desk")


# -- end to end over HTTP -------------------------------------------------------------------------


def scripted_agent(*steps):
    """Replies steps[k] at the agent's k-th turn."""
    return lambda request: steps[min(sum(m["role"] == "assistant" for m in request["messages"]), len(steps) - 1)]


def calls(*pairs):
    return {"content": None, "tool_calls": [tool_call(name, args, f"call_{i}") for i, (name, args) in enumerate(pairs)]}


def customer(request) -> str:
    """Gives the email from its goal when asked, and is satisfied once told it is done."""
    goal = request["messages"][0]["content"]
    said = last_user_text(request).lower()
    if "email" in said:
        return f"It's {re.search(r'[a-z.]+@example.com', goal).group(0)}."
    return "Thank you so much! [DONE]" if "refunded" in said else "Could you do it, please?"


def judge(request) -> str:
    text = last_user_text(request)
    assert "Rate the manner" in text
    return "Score: 8" if "Sorry" in text else "Score: 3"


def one_server(request) -> str:
    """The customer and the judge on one endpoint (the judge's default)."""
    return customer(request) if request["messages"][0]["role"] == "system" else judge(request)


async def run_task(env, task_id: str, policy) -> tuple[lmgym.Rollout, list[dict]]:
    """Task `task_id` played by the scripted agent `policy`: the scored rollout, and what the agent was sent."""
    example = next(e for e in [*env.dataset, *env.eval_dataset] if e.id == task_id)
    rollout, server = await run_scripted(env, policy, example, model="agent")
    return rollout, server.requests


async def test_the_right_actions_for_a_satisfied_customer_earn_one_plus_politeness():
    policy = scripted_agent(
        "Sorry to hear that! Could you tell me the email on your account?",
        calls(("find_customer", {"email": "maria.lopez@example.com"}), ("get_order", {"order_id": 1001})),
        calls(("issue_refund", {"order_id": 1001, "reason": "arrived with a cracked base"})),
        "Sorry again: I have refunded the full 39.00 for order 1001.",
    )
    with ScriptedServer(customer) as user_server, ScriptedServer(judge) as judge_server:
        env = lmgym.load_environment("support-desk", user_model="customer", user_base_url=user_server.base_url,
                                     judge_model="judge", judge_base_url=judge_server.base_url)
        rollout, policy_requests = await run_task(env, "refund-cracked-kettle", policy)
    assert rollout.error is None and rollout.state["user_outcome"] == "satisfied" and len(rollout.turns) == 4
    assert rollout.metrics["db_correct"] == 1.0 and rollout.metrics["politeness"] == pytest.approx(0.8)
    assert rollout.metrics["policy_violations"] == 0.0 and rollout.metrics["user_satisfied"] == 1.0
    assert rollout.reward == pytest.approx(1.16)
    assert rollout.state["db"]["refunds"][-1]["order_id"] == 1001
    assert [r["model"] for r in user_server.requests] == ["customer", "customer"] and len(judge_server.requests) == 1
    assert "find_customer" in judge_server.requests[0]["messages"][0]["content"]  # the judge sees the whole chat
    assert not any("cracked base. Your account email" in json.dumps(r) for r in policy_requests)


async def test_a_refund_against_the_policy_earns_little():
    policy = scripted_agent(
        "What is the email on your account?",
        calls(("find_customer", {"email": "tom.becker@example.com"}), ("get_order", {"order_id": 1003})),
        calls(("issue_refund", {"order_id": 1003, "reason": "crackling"})),
        "Done, refunded.",
    )
    with ScriptedServer(one_server) as server:
        env = lmgym.load_environment("support-desk", user_model="customer", user_base_url=server.base_url)
        rollout, _ = await run_task(env, "refund-late-headphones", policy)
        judged = [r for r in server.requests if r["messages"][0]["role"] != "system"]
    assert rollout.error is None and rollout.metrics["db_correct"] == 0.0 and rollout.metrics["policy_violations"] == 1.0
    assert rollout.metrics["politeness"] == pytest.approx(0.3) and rollout.reward == pytest.approx(0.06)
    assert len(judged) == 1 and judged[0]["model"] == "customer" and judged[0]["temperature"] == 0.0


def test_the_customer_conversation_trains_through_the_in_process_engine_as_one_sequence():
    pytest.importorskip("torch")
    from local_rollouts import hermes_call, run_local

    agent = [
        "Sorry to hear that! Could you tell me the email on your account?",
        hermes_call("find_customer", email="maria.lopez@example.com") + "\n" + hermes_call("get_order", order_id=1001),
        hermes_call("issue_refund", order_id=1001, reason="arrived with a cracked base"),
        "Sorry again: I have refunded the full 39.00 for order 1001.",
    ]
    with ScriptedServer(one_server) as server:
        env = lmgym.load_environment("support-desk", user_model="customer", user_base_url=server.base_url)
        example = next(e for e in [*env.dataset, *env.eval_dataset] if e.id == "refund-cracked-kettle")
        rollout, text = run_local(env, agent, example=example)
    assert rollout.state["user_outcome"] == "satisfied" and rollout.metrics["db_correct"] == 1.0
    assert rollout.metrics["tool_calls"] == 3 and rollout.metrics["policy_violations"] == 0.0
    assert text.count("<|im_start|>user\n") >= 2  # the customer's later turns sit between the agent's
