"""A customer-support desk: a simulated customer wants something done, the agent has tools.

Each task (`tasks.jsonl`, written for lmgym) gives a simulated customer a persona and a
private goal: a refund for a broken kettle, a new delivery address, a cancellation, or
something the shop's policy forbids (a refund after 30 days, a change to someone else's
order). The agent talks with the customer (a `UserSimEnv`) and uses five tools over its
own copy of a small shop database (`database.json`): `find_customer`, `get_order`,
`issue_refund`, `update_address`, `cancel_order`. The policy in the system prompt is the
agent's to apply: the tools let it break the policy (see `desk.py`).

Reward: `db_correct` (1.0 when the final database equals the initial one with exactly the
task's expected writes applied; refund reasons are free text and ignored, addresses
compare without case or punctuation) plus 0.2 x `politeness`, a judge's 0-10 score of
the agent's manner, scaled to [0, 1]. `policy_violations` (writes the policy forbids) and
the simulator's `user_satisfied` / `user_gave_up` are logged as weight-0 metrics.

The simulated customer is any OpenAI-compatible model: `user_model`, `user_base_url`,
`user_api_key_var` (`user_sampling` for its sampling). The politeness judge (temperature
0) uses the same endpoint unless `judge_model`, `judge_base_url` or `judge_api_key_var`
say otherwise (each falls back to its `user_` counterpart); `politeness_weight=0` drops it.
A policy that changes nothing scores `db_correct` = 1 on the tasks whose right outcome is
a refusal (13 of 33), as in tau-bench: compare agents with that baseline in mind.
Every third task is held out for evaluation; `system_prompt` replaces the agent's
instructions (a short one lets a model with a small context window train on it).
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from lmgym import Rubric
from lmgym.envs import SimulatedUser, UserSimEnv
from lmgym.errors import UsageError
from lmgym.rubrics import Judge, JudgeEndpoint
from lmgym.types import Example

from .desk import TOOLS, apply, digest, load_database

SYSTEM_PROMPT = """You are a customer-support agent of Larkspur Home, an online shop. Today is 2025-06-15. Help the customer with the tools, following the shop's policy:
1. Before changing anything, identify the customer by the email on their account (find_customer), and check with get_order that the order is on that account. Never change an order that is not theirs.
2. Refunds: only for delivered orders, at most 30 days after delivery, always the full order total.
3. Address changes and cancellations: only while the order is still "processing" (not yet shipped).
4. Change only what the customer asks for. When the policy forbids a request, explain why and do not do it.
Be polite, concise and honest; tell the customer what you did."""

USER_PROMPT = """You are role-playing a customer of Larkspur Home, an online shop, chatting with its support agent. Stay in character, and never mention that you are an AI or that you follow instructions.

Who you are: {persona}
What you want: {user_goal}

Write only your next chat message: one to three short sentences. Give the facts the agent asks for (your email, an order number, an address) when you know them from the above; never invent others.
When everything you want has been done, thank the agent and end your message with [DONE]. If the agent says it cannot be done, or you have asked twice without success, end your message with [GIVE UP]."""

POLITENESS_TEMPLATE = """Rate the manner of a customer-support agent in the chat below: courteous, respectful, patient and clear, also when it refuses a request. Do not judge whether the agent solved the problem or followed the shop's rules.

The customer's first message:
{question}

The rest of the chat (ASSISTANT is the agent; its tool calls and the TOOL results are lookups the customer does not see):
{completion}

Reply with one line: "Score: N", where N goes from 0 (rude or dismissive) to 10 (exemplary)."""

DATABASE = load_database()


def load_tasks() -> list[dict[str, Any]]:
    """Dataset rows: the customer's opening message as the prompt, the rest in info."""
    rows = []
    for line in files(__name__).joinpath("tasks.jsonl").read_text(encoding="utf-8").splitlines():
        task = json.loads(line)
        info = {k: task[k] for k in ("persona", "user_goal", "customer_email", "actions", "requested")}
        rows.append({"id": task["id"], "task": task["task"], "prompt": [{"role": "user", "content": task["opening"]}], "info": info})
    return rows


def db_correct(state, info) -> float:
    """1.0 when the final database is the initial one with exactly the expected writes applied."""
    return float(digest(state["db"]) == digest(apply(DATABASE, info["actions"], info["customer_email"])))


def policy_violations(state) -> float:
    return float(sum(a["policy_problem"] is not None for a in state["audit"]["actions"]))


class SupportDeskEnv(UserSimEnv):
    """A UserSimEnv whose rollouts each get their own copy of the database and an audit log."""

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        await super().setup_state(state, example)
        state["db"] = apply(DATABASE, [])
        state["audit"] = {"customer_email": example.info["customer_email"], "actions": []}


def load_environment(
    user_model: str | None = None,
    user_base_url: str | None = None,
    user_api_key_var: str = "OPENAI_API_KEY",
    user_sampling: dict[str, Any] | None = None,
    judge_model: str | None = None,
    judge_base_url: str | None = None,
    judge_api_key_var: str | None = None,
    politeness_weight: float = 0.2,
    max_turns: int = 16,
    system_prompt: str | None = None,
) -> SupportDeskEnv:
    if not user_model:
        raise UsageError(
            "support-desk's customer is played by a model: name one, e.g. "
            '-a \'{"user_model": "gpt-4.1-mini", "user_base_url": "https://api.openai.com/v1"}\' '
            "(the politeness judge uses the same one unless judge_model names another)"
        )
    user = SimulatedUser(user_model, base_url=user_base_url, api_key_var=user_api_key_var, sampling=user_sampling, prompt=USER_PROMPT)
    rubric = Rubric([db_correct, policy_violations], weights=[1.0, 0.0])
    if politeness_weight:
        endpoint = JudgeEndpoint(
            judge_model or user_model,
            base_url=judge_base_url or user_base_url,
            api_key_var=judge_api_key_var or user_api_key_var,
        )
        rubric.add(Judge(endpoint, template=POLITENESS_TEMPLATE, verdict="score", name="politeness"), weight=politeness_weight)
    rows = load_tasks()
    return SupportDeskEnv(
        [r for i, r in enumerate(rows) if i % 3 != 2],
        [r for i, r in enumerate(rows) if i % 3 == 2],
        user=user,
        tools=TOOLS,
        hidden_args=["db", "audit"],
        system_prompt=SYSTEM_PROMPT if system_prompt is None else system_prompt,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 1024},
        audit_skip={"reward_without_answer": "graded on the shop database's final state, not on the text of a reply"},
    )
