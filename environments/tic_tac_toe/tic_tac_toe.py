"""Tic-tac-toe: two players take turns on a 3x3 grid, three in a row wins.

The rules are `RULES`, the system prompt. Cells are numbered 1 to 9, left to right and
top to bottom. X moves first. A game starts from a random opening of `opening_moves`
marks (2 by default, one per player, so games differ; 0 gives the empty grid). The winner
can be checked directly from the final grid. A reply is the number of an empty cell,
either on its own or inside move tags (`<move>5</move>`, after an optional
`<think>` block). Anything else is an illegal move. The player is told why and moves
again, and its `max_illegal`-th illegal move forfeits the game.

Each player's reward is 1 for a win, 0.5 for a draw and 0 for a loss or a forfeit
(`lmgym.envs.multi_agent`). The opponent is "random" (any empty cell), "optimal"
(minimax: it never loses, and it picks at random among its best moves), "self", or
{"model": ..., "base_url": ...}. By default the learner plays X in even rollouts and O
in odd ones.

`compact=True` drops the system prompt and shows the grid as one short line, e.g.
"x:x2345o789". This is for the tiny character-level model, whose context is 256
positions.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any, ClassVar

from lmgym import XMLParser
from lmgym.envs import MultiAgentEnv, multi_agent_rubric
from lmgym.errors import IllegalMove

RULES = (
    "Let's play tic-tac-toe. Two players, X and O, take turns marking an empty cell of a 3x3 grid; X moves "
    "first. The first player with three marks in a row (across, down or diagonally) wins; a full grid "
    "without one is a draw. A game may start with a few cells already marked. Cells are numbered 1 to 9, "
    "left to right and top to bottom. On your turn, reply with the number of an empty cell inside move "
    "tags, for example <move>5</move>; you may think first inside <think></think> tags. An illegal move "
    "(no cell number, or a taken cell) is answered with the reason and you move again; {max_illegal} "
    "illegal moves in one game forfeit it."
)
LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
OTHER = {"x": "o", "o": "x"}


def winner(board: str) -> str | None:
    """The player with three in a row on `board` (9 characters of x, o and .), if any."""
    return next((board[a] for a, b, c in LINES if board[a] != "." and board[a] == board[b] == board[c]), None)


def empty_cells(board: str) -> list[int]:
    return [i for i, cell in enumerate(board) if cell == "."]


def place(board: str, cell: int, mark: str) -> str:
    return board[:cell] + mark + board[cell + 1:]


@functools.cache
def value(board: str, mover: str) -> int:
    """+1 if `mover` (to move) wins with best play on both sides, 0 for a draw, -1 if it loses."""
    if winner(board):
        return -1  # the previous mover made three in a row
    cells = empty_cells(board)
    return max((-value(place(board, i, mover), OTHER[mover]) for i in cells), default=0)


def best_cells(board: str, mover: str) -> list[int]:
    scores = {i: -value(place(board, i, mover), OTHER[mover]) for i in empty_cells(board)}
    return [i for i, score in scores.items() if score == max(scores.values())]


def random_player(state: dict[str, Any], seat: str, rng: random.Random) -> str:
    return str(rng.choice(empty_cells(state["board"])) + 1)


def optimal_player(state: dict[str, Any], seat: str, rng: random.Random) -> str:
    return str(rng.choice(best_cells(state["board"], seat)) + 1)


def opening(rng: random.Random, moves: int) -> str:
    board = "." * 9
    for k in range(moves):
        board = place(board, rng.choice(empty_cells(board)), "xo"[k % 2])
    return board


class TicTacToeEnv(MultiAgentEnv):
    policies: ClassVar = {"random": random_player, "optimal": optimal_player}

    def __init__(self, *args: Any, compact: bool, **kwargs: Any):
        super().__init__(*args, seats=("x", "o"), **kwargs)
        self.compact = compact

    def new_game(self, state: dict[str, Any], example) -> None:
        state["board"] = board = example.info["board"]
        state["to_move"] = "x" if board.count("x") == board.count("o") else "o"

    def play(self, state: dict[str, Any], seat: str, reply: str) -> str:
        move = self.parser.parse_answer(reply) or reply.strip()
        if not re.fullmatch(r"[1-9]", move):
            raise IllegalMove(f"{move[:30]!r} is not a cell number from 1 to 9" if move else "no move found")
        if state["board"][int(move) - 1] != ".":
            raise IllegalMove(f"cell {move} is taken")
        state["board"] = place(state["board"], int(move) - 1, seat)
        return move

    def outcome(self, state: dict[str, Any]) -> dict[str, float] | None:
        if found := winner(state["board"]):
            return {found: 1.0, OTHER[found]: 0.0}
        return None if "." in state["board"] else {"x": 0.5, "o": 0.5}

    def observe(self, state: dict[str, Any], seat: str) -> str:
        cells = "".join(str(i + 1) if c == "." else c for i, c in enumerate(state["board"]))
        result = "win" if state["winner"] == seat else "draw" if state["winner"] is None else "loss"
        if self.compact:
            return f"{cells} {result}" if state["over"] else f"{seat}:{cells}"
        lines = []
        if state["forfeit"] and state["forfeit"] != seat:
            lines.append(f"{state['forfeit'].upper()} made {self.max_illegal} illegal moves and forfeits.")
        elif state["moves"] and state["moves"][-1][0] != seat:
            lines.append(f"{state['moves'][-1][0].upper()} played {state['moves'][-1][1]}.")
        lines.append("\n--+---+--\n".join(" | ".join(cells[r:r + 3]).upper() for r in (0, 3, 6)))
        endings = {"win": "You win.", "draw": "Draw: the grid is full.", "loss": "You lose."}
        lines.append(endings[result] if state["over"] else f"You are {seat.upper()}. Your move.")
        return "\n".join(lines)

    def illegal_note(self, state: dict[str, Any], seat: str, reason: str) -> str:
        return "illegal" if self.compact else super().illegal_note(state, seat, reason)


def load_environment(
    num_examples: int = 200, num_eval_examples: int = 100, opponent: Any = "random", learner_seat: str = "alternate",
    opening_moves: int = 2, max_illegal: int = 2, compact: bool = False, seed: int = 0,
) -> TicTacToeEnv:
    for name, number, least in [("num_examples", num_examples, 1), ("num_eval_examples", num_eval_examples, 0)]:
        if number < least:
            raise ValueError(f"{name} must be at least {least}, got {number}")
    if not 0 <= opening_moves <= 4:
        raise ValueError(f"opening_moves must be between 0 and 4, got {opening_moves}")
    prompt = [] if compact else [{"role": "system", "content": RULES.format(max_illegal=max_illegal)}]
    rows = lambda n, rng: [{"prompt": prompt, "board": opening(rng, opening_moves)} for _ in range(n)]  # noqa: E731
    parser = XMLParser(["think", "move"], answer_field="move", optional=("think",))
    return TicTacToeEnv(
        rows(num_examples, random.Random(seed)),
        rows(num_eval_examples, random.Random(f"{seed}/eval")) or None,
        opponents=opponent,
        learner_seat=learner_seat,
        max_illegal=max_illegal,
        compact=compact,
        parser=parser,
        rubric=multi_agent_rubric(parser),
        max_turns=5 + max_illegal,  # five marks at most, and the illegal moves before a forfeit
        sampling_args={"temperature": 0.7, "max_tokens": 8 if compact else 512},
    )
