"""The guessing games (wordle, mastermind) as their tests play them: one scored game
against the scripted server, the feedback it gave, a scripted player per game that reads the
feedback and keeps only the secrets consistent with it, and the checks both games' tests
make alike (environments/wordle/tests, environments/mastermind/tests).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import tomllib
from dataclasses import replace

import pytest
from scripted import by_turn, rollout_on

import lmgym
from lmgym import MultiTurnEnv, XMLParser
from lmgym.registry import BUNDLED_DIR, available_environments, describe
from lmgym.testing import last_user_text

WORDLE_FEEDBACK = re.compile(r"Guess \d+: ((?:[A-Z] ){4}[A-Z])\nMarks: +((?:[GY-] ){4}[GY-])\n")
MASTERMIND_FEEDBACK = re.compile(r"Guess \d+: (\d+) -> exact (\d), misplaced (\d)\.\n")


@functools.cache
def module_of(name):
    """The game's module, for its rules."""
    return inspect.getmodule(available_environments()[name].load())


def load(name, **args):
    return lmgym.load_environment(name, **args)


def answers(examples):
    return [e.answer for e in examples]


async def play(server, env, secret, player):
    """One scored rollout of `env` with `secret`, the model's replies coming from `player`."""
    server.app.reply = player if callable(player) else by_turn(*player)
    rollout = await rollout_on(server.base_url, env, replace(env.eval_dataset[0], answer=secret))
    assert rollout.error is None, rollout.error
    return rollout


def feedback_texts(rollout):
    return [m["content"] for turn in rollout.turns for m in turn.env_messages]


# --- players that reason from the feedback ------------------------------------------------------


def wordle_player(request):
    """Guesses the first listed word consistent with every feedback so far."""
    wordle = module_of("wordle")
    seen = [
        (letters.replace(" ", "").lower(), marks.replace(" ", ""))
        for m in request["messages"] if m["role"] == "user"
        for letters, marks in WORDLE_FEEDBACK.findall(m["content"] + "\n")
    ]
    assert seen or "first guess" in last_user_text(request)
    candidates = [w for w in wordle.load_words() if all(wordle.feedback(g, w) == marks for g, marks in seen)]
    return f"<guess>{candidates[0] if seen else 'slate'}</guess>"


ALL_CODES = ["".join(code) for code in itertools.product("012345", repeat=4)]


def mastermind_player(request):
    """Guesses the first code consistent with every (exact, misplaced) so far."""
    mastermind = module_of("mastermind")
    seen = [
        (guess, (int(exact), int(misplaced)))
        for m in request["messages"] if m["role"] == "user"
        for guess, exact, misplaced in MASTERMIND_FEEDBACK.findall(m["content"] + "\n")
    ]
    return f"<guess>{next(c for c in ALL_CODES if all(mastermind.score(g, c) == s for g, s in seen))}</guess>"


# --- what both games' tests check alike ---------------------------------------------------------


def check_loads_by_name_with_parser_rubric_and_budget(name, credit, max_turns):
    env = load(name, num_examples=5, num_eval_examples=3)
    assert isinstance(env, MultiTurnEnv) and env.max_turns == max_turns
    assert len(env.dataset) == 5 and len(env.eval_dataset) == 3
    assert isinstance(env.parser, XMLParser) and env.rubric.parser is env.parser
    assert env.rubric.names == ["solved", credit, "fewer_turns", "format_reward", "guesses_used", "invalid_guesses"]
    assert env.rubric.weights == [1.0, 0.2, 0.2, 0.2, 0.0, 0.0]
    for example in env.dataset + env.eval_dataset:
        system, user = example.prompt
        assert "<guess>" in system["content"] and f"{max_turns} guesses" in user["content"]
    assert len({str(e.prompt) for e in env.dataset + env.eval_dataset}) == 1  # nothing of the secret leaks
    assert available_environments()[name].source.startswith(f"entry point {name}:")
    project = tomllib.loads((BUNDLED_DIR / name / "pyproject.toml").read_text())
    assert describe(available_environments()[name]).rstrip(".") == project["project"]["description"]


def check_splits_are_deterministic_distinct_and_disjoint(name):
    a, b, c = load(name, seed=3), load(name, seed=3), load(name, seed=4)
    assert len(a.dataset) == 200 and len(a.eval_dataset) == 100
    assert answers(a.dataset) == answers(b.dataset) and answers(a.eval_dataset) == answers(b.eval_dataset)
    assert answers(a.dataset) != answers(c.dataset) and answers(a.eval_dataset) != answers(c.eval_dataset)
    for env in (a, c):
        assert len(set(answers(env.dataset))) == 200 and len(set(answers(env.eval_dataset))) == 100
    assert not set(answers(a.dataset + c.dataset)) & set(answers(a.eval_dataset + c.eval_dataset))
    assert answers(load(name, num_examples=1).eval_dataset) == answers(load(name, num_examples=50).eval_dataset)
    assert load(name, num_eval_examples=0).eval_dataset is None


async def check_end_to_end_games_are_won_by_a_consistent_player(server, name, player):
    """Four eval games over real HTTP, each won by `player`; the requests carry the whole game."""
    env = load(name, num_examples=1, num_eval_examples=4)
    for example in env.eval_dataset:
        before = len(server.requests)
        rollout = await play(server, env, example.answer, player)
        turns = len(rollout.turns)
        assert rollout.state["stop_reason"] == "done" and rollout.state["solved"], (example.answer, feedback_texts(rollout))
        assert rollout.turns[-1].assistant["content"] == f"<guess>{example.answer}</guess>"
        assert all(len(t.env_messages) == 1 and t.env_messages[0]["role"] == "user" for t in rollout.turns[:-1])
        requests = server.requests[before:]
        assert len(requests) == turns and requests[0]["messages"] == example.prompt
        assert requests[-1]["messages"] == rollout.messages[:-1]  # the whole game so far, every turn
        budget = env.max_turns
        assert rollout.metrics["fewer_turns"] == pytest.approx((budget - turns) / (budget - 1))
        assert rollout.reward == pytest.approx(1.4 + 0.2 * (budget - turns) / (budget - 1))
