"""The multi-turn games: wordle and mastermind.

The feedback rules are checked by hand (repeated letters and digits included), the
rubric on scripted games, and whole games end to end over real HTTP against a scripted
player that reads the feedback and keeps only the secrets consistent with it.
"""

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

GAMES = {"wordle": ("letter_credit", 6), "mastermind": ("peg_credit", 10)}
WORDLE_FEEDBACK = re.compile(r"Guess \d+: ((?:[A-Z] ){4}[A-Z])\nMarks: +((?:[GY-] ){4}[GY-])\n")
MASTERMIND_FEEDBACK = re.compile(r"Guess \d+: (\d+) -> exact (\d), misplaced (\d)\.\n")


def module_of(name):
    return inspect.getmodule(available_environments()[name].load())


wordle, mastermind = module_of("wordle"), module_of("mastermind")


def load(name, **args):
    return lmgym.load_environment(name, **args)


def answers(examples):
    return [e.answer for e in examples]


@pytest.fixture
def server(server_for):
    return server_for(None)  # the module's one scripted server (conftest.py); `play` sets its reply


async def play(server, env, secret, player):
    """One scored rollout of `env` with `secret`, the model's replies coming from `player`."""
    server.app.reply = player if callable(player) else by_turn(*player)
    rollout = await rollout_on(server.base_url, env, replace(env.eval_dataset[0], answer=secret))
    assert rollout.error is None, rollout.error
    return rollout


def feedback_texts(rollout):
    return [m["content"] for turn in rollout.turns for m in turn.env_messages]


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


def test_word_list_is_clean_and_shipped_as_package_data():
    words = wordle.load_words()
    assert len(words) >= 300 and len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]{5}", w) for w in words)
    assert wordle.WORDS_FILE.parent == BUNDLED_DIR / "wordle" / "wordle"
    project = tomllib.loads((BUNDLED_DIR / "wordle" / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["package-data"] == {"wordle": ["words.txt"]}


# --- loading and data -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", GAMES)
def test_loads_by_name_with_parser_rubric_and_budget(name):
    credit, max_turns = GAMES[name]
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


@pytest.mark.parametrize("name", GAMES)
def test_splits_are_deterministic_distinct_and_disjoint(name):
    a, b, c = load(name, seed=3), load(name, seed=3), load(name, seed=4)
    assert len(a.dataset) == 200 and len(a.eval_dataset) == 100
    assert answers(a.dataset) == answers(b.dataset) and answers(a.eval_dataset) == answers(b.eval_dataset)
    assert answers(a.dataset) != answers(c.dataset) and answers(a.eval_dataset) != answers(c.eval_dataset)
    for env in (a, c):
        assert len(set(answers(env.dataset))) == 200 and len(set(answers(env.eval_dataset))) == 100
    assert not set(answers(a.dataset + c.dataset)) & set(answers(a.eval_dataset + c.eval_dataset))
    assert answers(load(name, num_examples=1).eval_dataset) == answers(load(name, num_examples=50).eval_dataset)
    assert load(name, num_eval_examples=0).eval_dataset is None


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("wordle", {"num_examples": 0}, "num_examples must be between 1 and"),
        ("wordle", {"num_eval_examples": -1}, "num_eval_examples must be between 0 and"),
        ("wordle", {"num_eval_examples": 1000}, "num_eval_examples must be between 0 and"),
        ("wordle", {"max_turns": 0}, "max_turns must be at least 1"),
        ("mastermind", {"num_examples": 0}, "num_examples must be at least 1"),
        ("mastermind", {"num_eval_examples": -1}, "num_eval_examples must be at least 0"),
        ("mastermind", {"code_length": 0}, "code_length must be between 1 and 10"),
        ("mastermind", {"num_digits": 11}, "num_digits must be between 2 and 10"),
        ("mastermind", {"code_length": 2, "num_digits": 3}, "too few .* codes for num_.*examples"),
    ],
)
def test_bad_arguments_are_rejected_naming_the_argument(name, args, message):
    with pytest.raises(ValueError, match=message):
        load(name, **args)


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


def wordle_player(request):
    """Guesses the first listed word consistent with every feedback so far."""
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
    seen = [
        (guess, (int(exact), int(misplaced)))
        for m in request["messages"] if m["role"] == "user"
        for guess, exact, misplaced in MASTERMIND_FEEDBACK.findall(m["content"] + "\n")
    ]
    return f"<guess>{next(c for c in ALL_CODES if all(mastermind.score(g, c) == s for g, s in seen))}</guess>"


@pytest.mark.parametrize("name, player", [("wordle", wordle_player), ("mastermind", mastermind_player)])
async def test_end_to_end_games_are_won_by_a_consistent_player(server, name, player):
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
