"""`GuessingGameEnv`: a secret, one guess per reply, feedback until it is found or the turns run out.

Wordle, Mastermind and many puzzles share this shape, so a game writes only `judge`:
read one guess, record what it learnt in `state`, return the feedback text and whether
the secret is found (or raise `lmgym.errors.InvalidGuess` saying why the guess cannot be
played).

Each reply is played exactly once, in `on_reply` (the loop calls it right after the
reply); `is_done` asks whether it found the secret, and `env_response` sends that
reply's feedback. An invalid reply is told why and still uses a turn: a free retry
would let a model loop on bad replies without bound. The last feedback of a lost game
reveals the secret.

`state`: `secret`, `guesses` (what `judge` appends), `feedback` (one text per reply),
`invalid_guesses`, `solved`, `max_turns`. `game_rubric` holds the rewards every such
game shares: `solved` (1.0), the game's partial `credit` (0.2), `fewer_turns` (0.2),
the strict format reward (0.2), and the weight-0 metrics `guesses_used` and
`invalid_guesses`. A win scores at least 1.0 and a loss below 0.4, so pass@k counts wins.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.errors import InvalidGuess
from lmgym.parsers.parser import Parser
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Example, Messages


class GuessingGameEnv(MultiTurnEnv):
    secret_name = "secret"  # "No guesses left. The {secret_name} was ..."

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        state.update(secret=example.answer, guesses=[], feedback=[], invalid_guesses=0, solved=False, max_turns=self.max_turns)

    async def on_reply(self, messages: Messages, state: dict[str, Any]) -> None:
        self.play(messages[-1].get("content") or "", state)

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        return state["solved"]

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        return [{"role": "user", "content": state["feedback"][-1]}]

    @abstractmethod
    def judge(self, guess: str, state: dict[str, Any]) -> tuple[str, bool]:
        """(feedback text, solved) for one parsed guess; raises InvalidGuess."""

    def show(self, secret: str) -> str:
        return secret

    def play(self, reply: str, state: dict[str, Any]) -> None:
        try:
            text, state["solved"] = self.judge(self.parser.parse_answer(reply) or "", state)
        except InvalidGuess as exc:
            state["invalid_guesses"] += 1
            text = f"Invalid guess: {exc}. It still used a turn."
        left = self.max_turns - state["turn"]
        ending = f"{left} guess{'es' * (left != 1)} left." if left else f"No guesses left. The {self.secret_name} was {self.show(state['secret'])}."
        state["feedback"].append(f"{text}\n{ending}")


def solved(state) -> float:
    return float(state["solved"])


def fewer_turns(state) -> float:
    """1.0 for a win at the first reply, falling linearly to 0.0 at the last; 0.0 for a loss."""
    budget = state["max_turns"]
    return float(state["solved"]) * ((budget - state["turn"]) / (budget - 1) if budget > 1 else 1.0)


def guesses_used(state) -> float:
    return float(state["turn"])


def invalid_guesses(state) -> float:
    return float(state["invalid_guesses"])


def game_rubric(credit: Callable[..., float], parser: Parser) -> Rubric:
    return Rubric(
        [solved, credit, fewer_turns, parser.get_format_reward_func(), guesses_used, invalid_guesses],
        weights=[1.0, 0.2, 0.2, 0.2, 0.0, 0.0],
        parser=parser,
    )
