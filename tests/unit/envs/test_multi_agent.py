"""Multi-agent episodes: `MultiAgentEnv` (seats, per-seat rewards, opponents, errors) and
the bundled two-player game, tic-tac-toe.

The rules are checked by hand. Every model seat, learner or opponent, is a scripted
OpenAI-compatible server on loopback that reads the grid from its latest user message,
so the seats really play each other over HTTP. The training shape goes through a
`LocalClient` with a scripted engine (the real chat template and tokenizer), so every
trained token can be checked.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import re
import tomllib
from dataclasses import replace

import pytest
from scripted import by_turn, rollout_on

import lmgym
from lmgym import OpenAIClient, errors
from lmgym.embedded import free_port
from lmgym.envs.multi_agent import ModelSeat, MultiAgentEnv, PolicySeat, SelfSeat
from lmgym.registry import BUNDLED_DIR, available_environments, describe
from lmgym.testing import ScriptedServer, last_user_text

ttt = inspect.getmodule(available_environments()["tic-tac-toe"].load())
SECRET = "SECRET plan: take the corners"


def load(**args):
    return lmgym.load_environment("tic-tac-toe", **{"num_examples": 4, "num_eval_examples": 4, **args})


def grid_of(text: str) -> str:
    """The grid of an observation as 9 characters of x, o and . (empty)."""
    compact = re.search(r"[xo]:([1-9xo]{9})", text)
    marks = compact.group(1) if compact else re.findall(r"[1-9XO]", "".join(line for line in text.splitlines() if " | " in line))
    return "".join("." if m.isdigit() else m.lower() for m in marks)


def player(pick, *, think: str = ""):
    """A scripted model that plays cell pick(grid) of the grid it was last shown."""
    return lambda request: f"{think}<move>{pick(grid_of(last_user_text(request))) + 1}</move>"


first_empty = player(lambda grid: grid.index("."))
last_empty = player(lambda grid: grid.rindex("."))


@pytest.fixture(scope="module")
def servers():
    with ScriptedServer() as learner, ScriptedServer() as rival:
        yield learner, rival


@pytest.fixture
def learner(servers):
    servers[0].app.requests.clear()
    servers[0].app.reply = first_empty
    return servers[0]


@pytest.fixture
def rival(servers):
    servers[1].app.requests.clear()
    servers[1].app.reply = last_empty
    return servers[1]


def rival_seat(server, **kwargs):
    return {"model": "rival", "base_url": server.base_url, "max_retries": 0, **kwargs}


def on_board(env, board, example_id=0):
    return replace(env.eval_dataset[0], id=example_id, info={"board": board})


async def play(env, server, example=None, index=0, score=True):
    """One rollout of `env` whose learner is the model behind `server`, scored."""
    return await rollout_on(server.base_url, env, example or on_board(env, "." * 9), index=index, score=score)


def env_texts(rollout):
    return [m["content"] for turn in rollout.turns for m in turn.env_messages]


# --- the rules, by hand --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "board, found",
    [("xxx.oo...", "x"), ("o.xo.xo..", "o"), ("x.o.xo..x", "x"), ("..o.o.o.x", "o"), ("xoxoxooxo", None), (".........", None)],
)
def test_winner_is_three_in_a_row_across_down_or_diagonally(board, found):
    assert ttt.winner(board) == found


def test_optimal_player_wins_blocks_and_never_loses_to_random():
    assert ttt.best_cells("xx.oo....", "x") == [2]  # take the win
    assert ttt.best_cells("xx..o....", "o") == [2]  # block the loss
    assert ttt.value("." * 9, "x") == 0  # perfect play draws
    rng = random.Random(0)
    for game in range(200):
        board, mover, seat = ttt.opening(rng, game % 3), None, "xo"[game % 2]
        mover = "x" if board.count("x") == board.count("o") else "o"
        fair = ttt.value(board, seat if mover == seat else ttt.OTHER[seat]) * (1 if mover == seat else -1) >= 0
        while not ttt.winner(board) and "." in board:
            policy = ttt.optimal_player if mover == seat else ttt.random_player
            board = ttt.place(board, int(policy({"board": board}, mover, rng)) - 1, mover)
            mover = ttt.OTHER[mover]
        assert not fair or ttt.winner(board) in (None, seat), board


# --- loading ---------------------------------------------------------------------------------------


def test_loads_by_name_with_rules_seats_opponents_and_rubric():
    env = load()
    assert isinstance(env, MultiAgentEnv) and env.seats == ("x", "o") and env.learner_seat == "alternate"
    assert all(isinstance(seat, PolicySeat) and seat.policy is ttt.random_player for seat in env.opponents.values())
    assert env.max_turns == 7 and env.max_illegal == 2
    assert env.rubric.names == ["seat_reward", "won", "drew", "lost", "illegal_moves", "forfeited"]
    assert env.rubric.weights == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    for example in env.dataset + env.eval_dataset:
        assert example.prompt == [{"role": "system", "content": ttt.RULES.format(max_illegal=2)}]
        assert sorted(example.info["board"]) == [".", ".", ".", ".", ".", ".", ".", "o", "x"]
    assert available_environments()["tic-tac-toe"].source.startswith("entry point tic_tac_toe:")
    project = tomllib.loads((BUNDLED_DIR / "tic_tac_toe" / "pyproject.toml").read_text())
    assert describe(available_environments()["tic-tac-toe"]).rstrip(".") == project["project"]["description"]
    compact = load(compact=True, opening_moves=0, opponent="optimal", max_illegal=1)
    assert compact.eval_dataset[0].prompt == [] and compact.max_turns == 6
    assert compact.sampling_args["max_tokens"] == 8


def test_openings_are_seeded():
    boards = lambda env: [e.info["board"] for e in env.dataset + env.eval_dataset]  # noqa: E731
    assert boards(load(seed=1)) == boards(load(seed=1)) != boards(load(seed=2))
    assert {e.info["board"] for e in load(opening_moves=0).dataset} == {"." * 9}
    assert load(num_eval_examples=0).eval_dataset is None


@pytest.mark.parametrize(
    "args, message",
    [
        ({"num_examples": 0}, "num_examples must be at least 1"),
        ({"opening_moves": 5}, "opening_moves must be between 0 and 4"),
        ({"learner_seat": "z"}, "learner_seat must be one of"),
        ({"max_illegal": 0}, "max_illegal must be at least 1"),
        ({"opponent": "grandmaster"}, "unknown opponent 'grandmaster': use 'random', 'optimal', 'self'"),
        ({"opponent": {"model": "m", "bogus": 1}}, "bad opponent model"),
        ({"opponent": {"x": "random"}}, r"opponents names no player for the seats \['o'\]"),
    ],
)
def test_bad_arguments_are_rejected(args, message):
    with pytest.raises(ValueError, match=message):
        load(**args)


def test_opponents_per_seat_and_python_functions():
    env = load(opponent={"x": "optimal", "o": lambda state, seat, rng: "5"}, learner_seat="alternate")
    assert env.opponents["x"].policy is ttt.optimal_player and env.opponents["o"].policy(None, "o", None) == "5"
    assert set(load(opponent="self", learner_seat="x").opponents) == {"o"}
    assert isinstance(load(opponent="self").opponents["o"], SelfSeat)
    assert isinstance(load(opponent={"model": "m", "base_url": "http://h/v1"}).opponents["x"], ModelSeat)


# --- seats ------------------------------------------------------------------------------------------


async def test_learner_seat_alternates_by_rollout_index(learner):
    env = load(opponent="optimal")
    as_x, as_o = await play(env, learner, index=0), await play(env, learner, index=1)
    assert as_x.state["seat"] == "x" and as_x.state["moves"][0] == ["x", "1"]
    assert as_x.example.prompt[-1]["content"].endswith("You are X. Your move.")
    assert as_o.state["seat"] == "o" and as_o.state["moves"][0][0] == "x"
    first = as_o.example.prompt[-1]["content"]  # the learner's first prompt shows the opponent's opening move
    assert first.startswith(f"X played {as_o.state['moves'][0][1]}.") and first.endswith("You are O. Your move.")
    assert as_o.example.id == 0 and as_o.example.prompt[:-1] == env.eval_dataset[0].prompt
    assert learner.requests[-len(as_o.turns)]["messages"] == as_o.example.prompt  # recorded as seen
    by_example = load(learner_seat="example")  # the example's seat, whatever the rollout index
    assert [by_example.learner_of(on_board(env, "." * 9, i), index) for i, index in [(0, 1), (1, 0), (2, 1)]] == ["x", "o", "x"]
    assert len({by_example.learner_of(on_board(env, "." * 9, "a"), index) for index in range(4)}) == 1
    assert load(learner_seat="o").learner_of(env.eval_dataset[0], 0) == "o"


async def test_scripted_opponent_server_plays_and_rewards_are_per_seat(learner, rival):
    env = load(opponent=rival_seat(rival))
    won = await play(env, learner, index=0)  # learner X takes 1 2 3, the rival O takes 9 8
    assert won.error is None and won.state["moves"] == [["x", "1"], ["o", "9"], ["x", "2"], ["o", "8"], ["x", "3"]]
    assert won.state["rewards"] == {"x": 1.0, "o": 0.0} and won.state["winner"] == "x"
    assert won.reward == 1.0 and won.metrics == {"seat_reward": 1.0, "won": 1.0, "drew": 0.0, "lost": 0.0, "illegal_moves": 0.0, "forfeited": 0.0}
    assert len(won.turns) == 3 and env_texts(won)[0] == "O played 9.\nX | 2 | 3\n--+---+--\n4 | 5 | 6\n--+---+--\n7 | 8 | O\nYou are X. Your move."
    assert [r["model"] for r in rival.requests] == ["rival", "rival"] and all(r["model"] == "scripted" for r in learner.requests)
    assert won.state["seat_usage"]["o"]["requests"] == 2 and won.usage.requests == 3
    lost = await play(env, learner, index=1)  # the rival X takes 9 8 7, the learner O takes 1 2
    assert lost.state["moves"] == [["x", "9"], ["o", "1"], ["x", "8"], ["o", "2"], ["x", "7"]]
    assert lost.state["rewards"] == {"x": 1.0, "o": 0.0} and lost.reward == 0.0 and lost.metrics["lost"] == 1.0
    assert env_texts(lost)[-1].startswith("X played 7.") and env_texts(lost)[-1].endswith("You lose.")
    assert lost.state["stop_reason"] == "done"


async def test_draw_gives_each_seat_half(learner):
    learner.app.reply = player(lambda grid: ttt.best_cells(grid, "x")[0])
    rollout = await play(load(opponent="optimal"), learner, index=0)
    assert rollout.state["rewards"] == {"x": 0.5, "o": 0.5} and rollout.state["winner"] is None
    assert rollout.metrics["drew"] == 1.0 and rollout.reward == 0.5


async def test_the_learner_never_sees_the_opponents_private_prompt(learner, rival):
    learner.app.reply = player(lambda grid: grid.index("."), think="<think>my own plan</think>")
    rollout = await play(load(opponent=rival_seat(rival, system_prompt=SECRET)), learner, index=0)
    assert rollout.error is None
    assert not any(SECRET in str(request) for request in learner.requests)
    assert all(r["messages"][0] == {"role": "system", "content": SECRET} for r in rival.requests)
    assert not any("my own plan" in str(request) for request in rival.requests)  # it sees moves, not replies
    assert not any("Let's play" in str(request) for request in rival.requests)  # its own prompt replaced the rules
    assert rollout.state["histories"]["o"][0]["content"] == SECRET


async def test_self_play_uses_the_learners_client_and_only_its_turns_are_the_rollouts(learner):
    rollout = await play(load(opponent="self"), learner, index=1)  # X (self) 1 3 5 7, O (the learner) 2 4 6
    opponent_moves = [m for s, m in rollout.state["moves"] if s == "x"]
    assert len(learner.requests) == len(rollout.state["moves"]) == len(rollout.turns) + len(opponent_moves)
    assert [t.assistant["content"] for t in rollout.turns] == [f"<move>{m}</move>" for s, m in rollout.state["moves"] if s == "o"]
    history = rollout.state["histories"]["x"]
    assert [m["content"] for m in history if m["role"] == "assistant"] == [f"<move>{m}</move>" for m in opponent_moves]
    assert rollout.state["seat_usage"]["x"]["requests"] == len(opponent_moves)
    assert rollout.state["rewards"] == {"x": 1.0, "o": 0.0}  # 3 5 7: a diagonal


# --- illegal moves ------------------------------------------------------------------------------------


async def test_an_illegal_move_is_explained_and_retried_without_the_opponent_moving(learner):
    learner.app.reply = lambda request: first_empty(request) if len(request["messages"]) > 2 else "I'd go for the middle"
    rollout = await play(load(opponent=lambda state, seat, rng: str(state["board"].rindex(".") + 1)), learner, index=0)
    first, second = env_texts(rollout)[:2]
    assert first.startswith("Illegal move: \"I'd go for the middle\" is not a cell number from 1 to 9. 1 more illegal move and you forfeit.\n")
    assert grid_of(first) == "." * 9  # the opponent did not move
    assert second.startswith("O played 9.")
    assert rollout.state["illegal_moves"] == {"x": 1, "o": 0} and rollout.metrics["illegal_moves"] == 1.0
    assert rollout.state["forfeit"] is None and rollout.state["winner"] == "x"  # then 1 2 3 against 9 8


async def test_the_last_allowed_illegal_move_forfeits(learner):
    learner.app.reply = by_turn("<move>5</move>", "<move>5</move>")
    env = load(opponent="random", max_illegal=1)
    rollout = await play(env, learner, on_board(env, "....x...o"), index=0)  # 5 is taken
    assert len(rollout.turns) == 1 and not env_texts(rollout) and rollout.state["stop_reason"] == "done"
    assert rollout.state["forfeit"] == "x" and rollout.state["rewards"] == {"x": 0.0, "o": 1.0}
    assert rollout.metrics == {"seat_reward": 0.0, "won": 0.0, "drew": 0.0, "lost": 1.0, "illegal_moves": 1.0, "forfeited": 1.0}


async def test_an_opponent_model_is_told_its_illegal_move_and_forfeits(learner, rival):
    rival.app.reply = by_turn("pass", "<move>9</move>", "")  # the empty reply is its second illegal move
    rollout = await play(load(opponent=rival_seat(rival)), learner, index=0)
    assert rollout.error is None and rollout.state["illegal_moves"] == {"x": 0, "o": 2}
    assert rival.requests[1]["messages"][-1]["content"].startswith("Illegal move: 'pass' is not a cell number")
    assert rollout.state["moves"] == [["x", "1"], ["o", "9"], ["x", "2"]] and rollout.state["forfeit"] == "o"
    assert env_texts(rollout)[-1].startswith("O made 2 illegal moves and forfeits.") and env_texts(rollout)[-1].endswith("You win.")
    assert rollout.reward == 1.0 and rollout.metrics["won"] == 1.0


async def test_running_out_of_turns_forfeits(learner):
    env = load(opponent="random")
    env.max_turns = 1
    rollout = await play(env, learner, index=0)
    assert rollout.state["stop_reason"] == "max_turns" and len(rollout.turns) == 1 and len(rollout.state["moves"]) == 2
    assert rollout.state["forfeit"] == "x" and rollout.reward == 0.0 and rollout.metrics["forfeited"] == 1.0


async def test_an_async_opponent_function_plays(learner):
    async def centre_first(state, seat, rng):
        await asyncio.sleep(0)
        return "5" if state["board"][4] == "." else str(state["board"].index(".") + 1)

    rollout = await play(load(opponent=centre_first), learner, index=1)
    assert rollout.state["moves"][:3] == [["x", "5"], ["o", "1"], ["x", "2"]] and rollout.error is None


async def test_fifty_concurrent_games_in_one_environment_play_as_they_would_alone(learner):
    """Each game's seat, state and random opponent come from its own rollout context."""
    env = load(opponent="random", opening_moves=0)
    games = [(on_board(env, "." * 9, example_id=f"g{i}"), i % 4) for i in range(50)]
    client = OpenAIClient(learner.base_url, max_retries=0)
    async with env.running():
        together = await asyncio.gather(*(env.rollout(client, "scripted", example, index=index) for example, index in games))
        alone = [await env.rollout(client, "scripted", example, index=index) for example, index in games]
    await client.aclose()
    for (example, index), a, b in zip(games, together, alone):
        assert a.error is None and a.state["seat"] == env.learner_of(example, index) == "xo"[index % 2]
        assert a.state["moves"] == b.state["moves"] and a.example.id == example.id and a.state["over"]
    assert len({str(r.state["moves"]) for r in together}) > 10  # the random opponent is seeded per rollout, not shared


async def test_is_done_only_asks_and_on_reply_plays_the_learners_move():
    env = load(opponent="random")
    state = {
        "seats": ["x", "o"], "seat": "x", "to_move": "x", "moves": [], "illegal_moves": {"x": 0, "o": 0}, "over": False,
        "forfeit": None, "winner": None, "rewards": None, "histories": {}, "seat_usage": {}, "board": "." * 9, "turn": 1,
    }
    messages = [{"role": "assistant", "content": "<move>5</move>"}]
    assert not await env.is_done(messages, state) and state["moves"] == [] and state["board"] == "." * 9
    await env.on_reply(messages, state)
    assert not await env.is_done(messages, state) and not await env.is_done(messages, state)
    assert state["moves"] == [["x", "5"]] and state["board"] == "....x...." and state["to_move"] == "o"


# --- errors ---------------------------------------------------------------------------------------------------


async def test_an_opponent_server_error_is_the_rollouts_recorded_error(learner, rival):
    env = load(opponent=rival_seat(rival))
    rival.app.faults.clear()
    rival.fail_next(500)
    midgame = await play(env, learner, index=0)
    assert midgame.error.kind == "server" and "opponent o" in midgame.error.message and midgame.reward is None
    assert len(midgame.turns) == 1 and midgame.state["rewards"] is None
    rival.fail_next(500)
    learner.app.requests.clear()
    opening = await play(env, learner, index=1)  # the rival moves first: it fails before the loop
    assert opening.error.kind == "server" and "opponent x" in opening.error.message
    assert opening.turns == [] and opening.reward is None and not learner.requests


async def test_an_unreachable_opponent_stops_the_run(learner):
    env = load(opponent={"model": "rival", "base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0})
    with pytest.raises(errors.ModelConnectionError, match="opponent o"):
        await play(env, learner, index=0)


async def test_a_broken_opponent_function_is_a_recorded_environment_error(learner):
    def broken(state, seat, rng):
        raise KeyError("board")

    for index in (0, 1):
        rollout = await play(load(opponent=broken), learner, index=index)
        assert rollout.error.kind == "environment" and "KeyError" in rollout.error.message


def test_opponent_clients_are_bound_per_event_loop(learner, rival):
    """Training runs one event loop per step: the opponent's client must follow it."""
    env = load(opponent=rival_seat(rival))
    seat = env.opponents["o"]
    first, second = asyncio.run(play(env, learner)), asyncio.run(play(env, learner))
    assert first.error is None and second.error is None and len(seat._clients._loops) == 0  # closed by stop()
    assert len(rival.requests) == 4


# --- the training shape ------------------------------------------------------------------------------------


def test_only_the_learners_tokens_are_trained_in_self_play():
    pytest.importorskip("torch")
    from lmgym.train.engines.local import LocalClient
    from lmgym.train.engines.sampling import Sample
    from lmgym.train.models import char_tokenizer
    from lmgym.train.render import encode
    from lmgym.train.tokens import rollout_samples

    tokenizer = char_tokenizer()

    class FirstEmptyEngine:  # plays the first empty cell of the grid in its prompt
        def __init__(self):
            self.tokenizer, self.prompts = tokenizer, []

        def generate(self, prompts, params):
            self.prompts += prompts
            texts = [str(grid_of(tokenizer.decode(p).rsplit("user\n", 1)[1]).index(".") + 1) for p in prompts]
            return [Sample(encode(tokenizer, t) + [tokenizer.eos_token_id], [-0.5, -0.25], "stop", t) for t in texts]

    engine = FirstEmptyEngine()
    env = load(compact=True, opponent="self", max_illegal=1)
    rollout = asyncio.run(env.rollout(LocalClient(engine), "local", on_board(env, "." * 9), index=1))
    assert rollout.error is None and rollout.state["seat"] == "o"
    assert rollout.example.prompt == [{"role": "user", "content": "o:x23456789"}]  # self (X) opened at 1
    assert len(engine.prompts) == len(rollout.state["moves"]) == 7  # both seats sampled by the same client
    [sample], split = rollout_samples(rollout, max_seq_len=256)
    assert not split and len(sample.input_ids) <= 256
    trained = [i for i, m in zip(sample.input_ids, sample.loss_mask) if m]
    learner_ids = [i for turn in rollout.turns for i in turn.token_ids]
    assert trained == learner_ids and tokenizer.decode(trained) == "2<|im_end|>4<|im_end|>6<|im_end|>"
    expected = tokenizer.apply_chat_template(rollout.messages[:-1], tokenize=False)  # the last message follows the last reply
    assert tokenizer.decode(sample.input_ids) == expected.removesuffix("\n")
