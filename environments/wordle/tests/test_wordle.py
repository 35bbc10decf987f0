"""The wordle game.

The feedback rules are checked by hand (repeated letters included), the rubric on scripted
games, and whole games end to end over real HTTP against a scripted player that reads the
feedback and keeps only the words consistent with it (tests/game_players.py, shared with
mastermind).
"""

import re
import tomllib
from dataclasses import replace

import pytest
from game_players import (
    check_end_to_end_games_are_won_by_a_consistent_player,
    check_loads_by_name_with_parser_rubric_and_budget,
    check_splits_are_deterministic_distinct_and_disjoint,
    feedback_texts,
    load,
    module_of,
    play,
    wordle_player,
)

from lmgym.registry import BUNDLED_DIR

NAME = "wordle"
wordle = module_of(NAME)


@pytest.fixture
def server(server_for):
    return server_for(None)  # the module's one scripted server (conftest.py); `play` sets its reply


# --- the rules, by hand -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret, guess, marks",
    [
        ("crane", "crane", "GGGGG"),
        ("apple", "papal", "YYG-Y"),  # the second p is green; the first p is the other p
        ("hello", "lolly", "-YGG-"),  # both l's are taken by greens: the first l gets nothing
        ("there", "eerie", "Y-Y-G"),  # three e's guessed, two in the secret: one G, one Y
        ("spool", "loops", "YYGYY"),
        ("abbey", "kebab", "-YGYY"),
        ("apple", "crane", "--Y-G"),
    ],
)
def test_wordle_marks_follow_the_repeated_letter_rule(secret, guess, marks):
    assert wordle.feedback(guess, secret) == marks


def test_word_list_is_clean_and_shipped_as_package_data():
    words = wordle.load_words()
    assert len(words) >= 300 and len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]{5}", w) for w in words)
    assert wordle.WORDS_FILE.parent == BUNDLED_DIR / "wordle" / "wordle"
    project = tomllib.loads((BUNDLED_DIR / "wordle" / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["package-data"] == {"wordle": ["words.txt"]}


# --- loading and data -----------------------------------------------------------------------------


def test_loads_by_name_with_parser_rubric_and_budget():
    check_loads_by_name_with_parser_rubric_and_budget(NAME, "letter_credit", 6)


def test_splits_are_deterministic_distinct_and_disjoint():
    check_splits_are_deterministic_distinct_and_disjoint(NAME)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"num_examples": 0}, "num_examples must be between 1 and"),
        ({"num_eval_examples": -1}, "num_eval_examples must be between 0 and"),
        ({"num_eval_examples": 1000}, "num_eval_examples must be between 0 and"),
        ({"max_turns": 0}, "max_turns must be at least 1"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        load(NAME, **args)


# --- scripted games: feedback and rewards ---------------------------------------------------------


async def test_wordle_win_at_the_first_guess_scores_full_marks(server):
    rollout = await play(server, load("wordle", num_examples=1), "apple", ["<guess>apple</guess>"])
    assert rollout.state["stop_reason"] == "done" and len(rollout.turns) == 1 and not feedback_texts(rollout)
    assert rollout.metrics == {
        "solved": 1.0, "letter_credit": 1.0, "fewer_turns": 1.0, "format_reward": 1.0, "guesses_used": 1.0, "invalid_guesses": 0.0,
    }
    assert rollout.reward == pytest.approx(1.6)


async def test_wordle_slower_win_earns_less_and_sees_each_guess_marked(server):
    replies = ["<guess>crane</guess>", "<guess>angle</guess>", "<think>two p's?</think>\n<guess>apple</guess>"]
    rollout = await play(server, load("wordle", num_examples=1), "apple", replies)
    assert feedback_texts(rollout) == [
        "Guess 1: C R A N E\nMarks:   - - Y - G\n5 guesses left.",
        "Guess 2: A N G L E\nMarks:   G - - G G\n4 guesses left.",
    ]
    assert rollout.state["guesses"] == [["crane", "--Y-G"], ["angle", "G--GG"], ["apple", "GGGGG"]]
    assert rollout.metrics["fewer_turns"] == pytest.approx(3 / 5)
    assert rollout.reward == pytest.approx(1.0 + 0.2 + 0.2 * 3 / 5 + 0.2)


async def test_wordle_loss_gets_partial_credit_and_the_answer(server):
    guesses = ["crane", "slate", "angle", "apply", "maple", "plate"]
    rollout = await play(server, load("wordle", num_examples=1), "apple", [f"<guess>{g}</guess>" for g in guesses])
    assert rollout.state["stop_reason"] == "max_turns" and len(rollout.turns) == 6
    assert feedback_texts(rollout)[-1].endswith("\nNo guesses left. The word was APPLE.")
    assert rollout.metrics["solved"] == 0.0 and rollout.metrics["fewer_turns"] == 0.0
    assert rollout.metrics["letter_credit"] == pytest.approx(0.8)  # apply: GGGG-
    assert rollout.reward == pytest.approx(0.2 * 0.8 + 0.2)


async def test_wordle_invalid_guesses_are_explained_and_use_a_turn(server):
    replies = ["crane", "<guess>cranes</guess>", "<guess>zzzzz</guess>", "<guess>Apple</guess>"]
    rollout = await play(server, load("wordle", num_examples=1), "apple", replies)
    assert feedback_texts(rollout) == [
        "Invalid guess: no guess found; reply with one five-letter word inside <guess></guess> tags. It still used a turn.\n5 guesses left.",
        "Invalid guess: 'cranes' is not five letters a-z. It still used a turn.\n4 guesses left.",
        "Invalid guess: 'zzzzz' is not in the word list. It still used a turn.\n3 guesses left.",
    ]
    assert rollout.metrics["invalid_guesses"] == 3 and rollout.metrics["guesses_used"] == 4
    assert rollout.metrics["format_reward"] == pytest.approx(3 / 4)  # the bare "crane" has no tags
    assert rollout.reward == pytest.approx(1.0 + 0.2 + 0.2 * 2 / 5 + 0.2 * 3 / 4)


async def test_wordle_any_guess_mode_and_last_guess_budget(server):
    env = load("wordle", num_examples=1, max_turns=1, allow_any_guess=True)
    rollout = await play(server, env, "apple", ["<guess>zzzzz</guess>"])
    assert feedback_texts(rollout) == ["Guess 1: Z Z Z Z Z\nMarks:   - - - - -\nNo guesses left. The word was APPLE."]
    won = await play(server, env, "apple", ["<guess>apple</guess>"])
    assert won.metrics["fewer_turns"] == 1.0 and won.reward == pytest.approx(1.6)


async def test_each_reply_is_played_in_on_reply_and_is_done_only_asks():
    env = load("wordle", num_examples=1)
    state = {"turn": 1}
    await env.setup_state(state, replace(env.dataset[0], answer="apple"))
    messages = [{"role": "assistant", "content": "<guess>crane</guess>"}]
    assert not await env.is_done(messages, state) and state["guesses"] == [] and state["feedback"] == []
    await env.on_reply(messages, state)
    assert not await env.is_done(messages, state) and not await env.is_done(messages, state)
    assert state["guesses"] == [["crane", "--Y-G"]] and len(state["feedback"]) == 1


# --- whole games end to end: a player that reasons from the feedback ------------------------------


async def test_end_to_end_games_are_won_by_a_consistent_player(server):
    await check_end_to_end_games_are_won_by_a_consistent_player(server, NAME, wordle_player)
