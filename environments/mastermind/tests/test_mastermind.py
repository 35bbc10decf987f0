"""The mastermind game.

The scoring rule is checked by hand (repeated digits included), the rubric on scripted
games, and whole games end to end over real HTTP against a scripted player that reads the
feedback and keeps only the codes consistent with it (tests/game_players.py, shared with
wordle).
"""

import pytest
from game_players import (
    check_end_to_end_games_are_won_by_a_consistent_player,
    check_loads_by_name_with_parser_rubric_and_budget,
    check_splits_are_deterministic_distinct_and_disjoint,
    feedback_texts,
    load,
    mastermind_player,
    module_of,
    play,
)

NAME = "mastermind"
mastermind = module_of(NAME)


@pytest.fixture
def server(server_for):
    return server_for(None)  # the module's one scripted server (conftest.py); `play` sets its reply


# --- the rules, by hand -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, guess, counts",
    [
        ("1234", "1234", (4, 0)),
        ("1122", "2211", (0, 4)),
        ("1123", "1111", (2, 0)),  # four 1s guessed, two in the code, both in place
        ("0012", "0100", (1, 2)),
        ("1123", "3211", (0, 4)),
        ("5555", "0123", (0, 0)),
        ("0012", "2100", (0, 4)),
    ],
)
def test_mastermind_counts_each_digit_at_most_as_often_as_the_code_has_it(code, guess, counts):
    assert mastermind.score(guess, code) == counts


# --- loading and data -----------------------------------------------------------------------------


def test_loads_by_name_with_parser_rubric_and_budget():
    check_loads_by_name_with_parser_rubric_and_budget(NAME, "peg_credit", 10)


def test_splits_are_deterministic_distinct_and_disjoint():
    check_splits_are_deterministic_distinct_and_disjoint(NAME)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"num_examples": 0}, "num_examples must be at least 1"),
        ({"num_eval_examples": -1}, "num_eval_examples must be at least 0"),
        ({"code_length": 0}, "code_length must be between 1 and 10"),
        ({"num_digits": 11}, "num_digits must be between 2 and 10"),
        ({"code_length": 2, "num_digits": 3}, "too few .* codes for num_.*examples"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        load(NAME, **args)


# --- scripted games: feedback and rewards ---------------------------------------------------------


async def test_mastermind_scripted_games(server):
    env = load("mastermind", num_examples=1)
    first = await play(server, env, "1123", ["<guess>1123</guess>"])
    assert first.reward == pytest.approx(1.6) and first.state["stop_reason"] == "done"
    replies = ["<guess>123</guess>", "<guess>1239</guess>", "no tags", "<guess>1111</guess>", "<guess>1 1 2 3</guess>"]
    rollout = await play(server, env, "1123", replies)
    assert feedback_texts(rollout) == [
        "Invalid guess: '123' is not 4 digits from 0 to 5 inside <guess></guess> tags. It still used a turn.\n9 guesses left.",
        "Invalid guess: '1239' is not 4 digits from 0 to 5 inside <guess></guess> tags. It still used a turn.\n8 guesses left.",
        "Invalid guess: no guess found; reply with 4 digits from 0 to 5 inside <guess></guess> tags. It still used a turn.\n7 guesses left.",
        "Guess 4: 1111 -> exact 2, misplaced 0.\n6 guesses left.",
    ]
    assert rollout.metrics["invalid_guesses"] == 3 and rollout.metrics["fewer_turns"] == pytest.approx(5 / 9)
    assert rollout.reward == pytest.approx(1.0 + 0.2 + 0.2 * 5 / 9 + 0.2 * 4 / 5)
    lost = await play(server, env, "1123", ["<guess>3211</guess>"] * 10)
    assert lost.state["stop_reason"] == "max_turns" and lost.metrics["peg_credit"] == pytest.approx(0.5)
    assert feedback_texts(lost)[-1] == "Guess 10: 3211 -> exact 0, misplaced 4.\nNo guesses left. The code was 1123."
    assert lost.reward == pytest.approx(0.2 * 0.5 + 0.2)


# --- whole games end to end: a player that reasons from the feedback ------------------------------


async def test_end_to_end_games_are_won_by_a_consistent_player(server):
    await check_end_to_end_games_are_won_by_a_consistent_player(server, NAME, mastermind_player)
