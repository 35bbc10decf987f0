"""`MultiAgentEnv`: two or more policies take turns on shared state; one seat is trained.

A game has named seats in turn order (`seats`). One is the *learner*: the client and
model given to `rollout`, which is what `lmgym eval -m` or the trainer supplies. Each
other seat is an opponent, given as one of

    "self"                 the learner's own client, model and sampling (self-play)
    {"model": ..., ...}    a fixed model behind an OpenAI-compatible API (`ModelSeat`:
                           base_url, api_key_var, sampling, system_prompt, max_retries)
    a name                 one of the game's built-in Python opponents (`policies`)
    a function             policy(state, seat, rng) -> reply text, sync or async

`opponents` is one of those for every seat, or a mapping from seat name to one of them.
`learner_seat` picks the learner's seat: a seat name; "alternate" (the rollout index
modulo the number of seats, so `-r 2` plays each example from both sides and the
first-move advantage cancels out); or "example" (from the example id, so every rollout
of a GRPO group plays the same side and the group baseline compares like with like).

Each seat sees the game from its own side. An opponent model keeps its own conversation
in `state["histories"]`: its system prompt, which the learner never sees, then one user
message per move with what `observe` tells that seat. The learner's conversation is the
rollout's, and the opponents' moves reach it as a user message from `env_response`,
where the opponents are called. Only the learner's replies are `rollout.turns`, so
training (`lmgym.train.tokens`) trains the learner's seat alone. With "self", the
opponent's turns are sampled from the current policy but are not trained.

The base loop asks the model first, so the opponents' moves that come before the
learner's first one are played in `rollout`, before the loop. The learner's first prompt
is the example's prompt plus one user message with its view of the game, and the rollout
records the example with that prompt (same id), so results show what the learner saw.
The hooks reach the rollout's learner client, seat and random generator through their
`RolloutContext`, so one environment object plays many games at once.

A game implements `new_game`, `play`, `observe` and `outcome` (abstract: a game without
one fails when it is created). Each learner reply is played once, in `on_reply`;
`is_done` only asks whether the game is over. When `play` rejects a reply
(`lmgym.errors.IllegalMove`), the move is counted against that seat, the seat is told
why, and it moves again. The seat's `max_illegal`-th illegal move forfeits the game,
and so does the learner running out of turns: the forfeiting seat scores 0 and every
other seat 1. `state["rewards"]` holds every seat's reward once the game is over.
`multi_agent_rubric` scores the learner's (`seat_reward`) and adds the metrics `won`,
`drew`, `lost`, `illegal_moves` and `forfeited`, all for the learner (not `win`/`loss`:
the trainer logs its own `loss` in the same namespace).

If an opponent model fails, its lmgym `ModelError` is raised again with the seat named
in the message. A fatal one (unreachable server, rejected key) stops the run; any other
becomes the rollout's recorded error, never a reward. An empty reply from an opponent
model is an illegal move.

State keys: `seats`, `seat` (the learner's), `to_move` (None once over), `moves`
([seat, move] for each legal move), `illegal_moves` ({seat: n}), `over`, `forfeit` (a
seat or None), `winner` (the one seat with the highest reward, else None), `rewards`,
`histories`, `seat_usage` (opponent models' tokens; `rollout.usage` is the learner's).
"""

from __future__ import annotations

import hashlib
import inspect
import random
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from lmgym import errors
from lmgym.clients.base import ModelClient
from lmgym.clients.openai import OpenAIClient
from lmgym.clients.per_loop import LoopClients
from lmgym.envs.context import RolloutContext
from lmgym.envs.multi_turn import MultiTurnEnv
from lmgym.errors import IllegalMove
from lmgym.parsers.parser import Parser
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Example, Message, Messages, Rollout, RolloutError

Policy = Callable[[dict[str, Any], str, random.Random], Any]  # -> reply text (or an awaitable of it)


class SelfSeat:
    """The learner's own client, model and sampling: self-play, not trained."""

    def __repr__(self) -> str:
        return "SelfSeat()"


@dataclass
class PolicySeat:
    """A Python opponent: `policy(state, seat, rng)` returns the reply text."""

    policy: Policy


class ModelSeat:
    """A fixed opponent model behind an OpenAI-compatible API, one client per event loop
    (training runs one event loop per step), closed by the environment's `stop`."""

    def __init__(
        self, model: str, *, base_url: str | None = None, api_key_var: str = "OPENAI_API_KEY",
        sampling: Mapping[str, Any] | None = None, system_prompt: str | None = None, max_retries: int = 3,
    ):
        self.model, self.base_url, self.api_key_var = model, base_url, api_key_var
        self.sampling = {"temperature": 0.7, "max_tokens": 512, **(sampling or {})}
        self.system_prompt, self.max_retries = system_prompt, max_retries
        self._clients = LoopClients(base_url, api_key_var, max_retries=max_retries)

    def __repr__(self) -> str:
        return f"ModelSeat(model={self.model!r}, base_url={self.base_url!r})"

    def client(self) -> OpenAIClient:
        return self._clients.bound().client

    async def aclose(self) -> None:
        await self._clients.aclose()


Seat = SelfSeat | PolicySeat | ModelSeat


def seat_of(spec: Any, policies: Mapping[str, Policy]) -> Seat:
    """An opponent from its description (see the module docstring)."""
    if isinstance(spec, (SelfSeat, PolicySeat, ModelSeat)):
        return spec
    if spec == "self":
        return SelfSeat()
    if isinstance(spec, str) and spec in policies:
        return PolicySeat(policies[spec])
    if isinstance(spec, Mapping) and isinstance(spec.get("model"), str):
        try:
            return ModelSeat(**spec)
        except TypeError as exc:
            raise ValueError(f"bad opponent model {dict(spec)!r}: {exc}") from None
    if callable(spec):
        return PolicySeat(spec)
    known = ", ".join(repr(name) for name in [*policies, "self"])
    raise ValueError(f"unknown opponent {spec!r}: use {known}, a function, or {{'model': ..., 'base_url': ...}}")


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def stable_index(value: Any) -> int:
    return value if isinstance(value, int) else int.from_bytes(hashlib.sha256(str(value).encode()).digest()[:8], "big")


class MultiAgentEnv(MultiTurnEnv):
    policies: ClassVar[Mapping[str, Policy]] = {}  # the game's built-in opponents, by name

    def __init__(
        self, *args: Any, seats: Sequence[str], opponents: Any = "self", learner_seat: str = "alternate",
        max_illegal: int = 1, **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        if len(seats) < 2 or len(set(seats)) != len(seats):
            raise ValueError(f"a multi-agent environment needs two or more distinct seats, got {list(seats)}")
        if learner_seat not in (*seats, "alternate", "example"):
            raise ValueError(f"learner_seat must be one of {[*seats, 'alternate', 'example']}, got {learner_seat!r}")
        if max_illegal < 1:
            raise ValueError(f"max_illegal must be at least 1, got {max_illegal}")
        self.seats, self.learner_seat, self.max_illegal = tuple(seats), learner_seat, max_illegal
        per_seat = isinstance(opponents, Mapping) and opponents and set(opponents) <= set(seats)
        shared = None if per_seat else seat_of(opponents, self.policies)
        needed = [s for s in seats if s != learner_seat]
        missing = [s for s in needed if per_seat and s not in opponents]
        if missing:
            raise ValueError(f"opponents names no player for the seats {missing}")
        self.opponents: dict[str, Seat] = {s: shared or seat_of(opponents[s], self.policies) for s in needed}

    # -- the game's hooks ---------------------------------------------------------------
    @abstractmethod
    def new_game(self, state: dict[str, Any], example: Example) -> None:
        """Set up the shared game in `state` (a board, a pile) and `state["to_move"]`,
        the seat that moves first (the first seat unless changed here)."""

    @abstractmethod
    def play(self, state: dict[str, Any], seat: str, reply: str) -> str:
        """Play `seat`'s reply on the shared state and return the move as recorded in
        `state["moves"]`; raise IllegalMove (saying why) when it cannot be played."""

    @abstractmethod
    def observe(self, state: dict[str, Any], seat: str) -> str:
        """What `seat` is told when it is to move, or when the game ended on another seat's move."""

    @abstractmethod
    def outcome(self, state: dict[str, Any]) -> dict[str, float] | None:
        """Every seat's reward if the game is over after the latest move, else None."""

    def next_seat(self, state: dict[str, Any], seat: str) -> str:
        """Who moves after `seat`'s legal move: the next seat, round the table."""
        return self.seats[(self.seats.index(seat) + 1) % len(self.seats)]

    def illegal_note(self, state: dict[str, Any], seat: str, reason: str) -> str:
        left = self.max_illegal - state["illegal_moves"][seat]
        return f"Illegal move: {reason}. {left} more illegal move{'s' * (left != 1)} and you forfeit."

    # -- the rollout ----------------------------------------------------------------------
    def learner_of(self, example: Example, index: int) -> str:
        if self.learner_seat == "alternate":
            return self.seats[index % len(self.seats)]
        if self.learner_seat == "example":
            return self.seats[stable_index(example.id) % len(self.seats)]
        return self.learner_seat

    def seat_for(self, example: Example, index: int) -> str:
        return self.learner_of(example, index)

    async def rollout(
        self,
        client: ModelClient,
        model: str,
        example: Example,
        *,
        index: int = 0,
        sampling_args: Mapping[str, Any] | None = None,
    ) -> Rollout:
        """Open the game (the opponents' first moves), then run the one loop from the learner's first prompt."""
        context = self.rollout_context(client, model, example, index=index, sampling_args=sampling_args)
        state = context.state
        state.update(
            seats=list(self.seats), seat=context.seat, to_move=self.seats[0], moves=[],
            illegal_moves=dict.fromkeys(self.seats, 0), over=False, forfeit=None, winner=None, rewards=None,
            histories={}, seat_usage={},
        )
        started = time.perf_counter()
        try:
            prompt = await self._opening(context)
        except errors.LmgymError as exc:  # as the loop itself records them
            if exc.fatal:
                raise
            error = RolloutError(exc.kind, str(exc))
            return Rollout(example, index, state=state, error=error, latency_s=time.perf_counter() - started)
        rollout = await self.run_rollout(context, prompt)  # the prompt the learner saw, under the same id
        if rollout.error is None and not rollout.state["over"]:
            self._end(rollout.state, forfeit=rollout.state["seat"])  # out of turns
        rollout.latency_s = time.perf_counter() - started
        return rollout

    async def _opening(self, context: RolloutContext) -> Messages:
        """Set the game up and play the opponents' moves before the learner's first one."""
        state = context.state
        try:
            self.new_game(state, context.example)
            await self._advance(context)
            return [*context.example.prompt, user(self.observe(state, state["seat"]))]
        except Exception as exc:
            if errors.passes_through(exc):
                raise
            raise errors.EnvironmentHookError(
                f"{type(self).__name__} could not open the game: {type(exc).__name__}: {exc}"
            ) from exc

    async def on_reply(self, messages: Messages, state: dict[str, Any]) -> None:
        """Play the learner's reply; an illegal one leaves the note it is told."""
        if not state["over"]:
            note = self._play(state, state["seat"], messages[-1].get("content") or "")
            if note:
                state["note"] = note

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        return state["over"]

    async def env_response(self, messages: Messages, state: dict[str, Any], context: RolloutContext) -> Messages:
        note = state.pop("note", None)
        if note is None:  # after a legal move the others play; after an illegal one the learner retries
            await self._advance(context)
        return [user("\n".join(filter(None, [note, self.observe(state, state["seat"])])))]

    async def stop(self) -> None:
        for player in self.opponents.values():
            if isinstance(player, ModelSeat):
                await player.aclose()
        await super().stop()

    # -- moves ------------------------------------------------------------------------------
    async def _advance(self, context: RolloutContext) -> None:
        """The opponents move until it is the learner's turn or the game is over."""
        state = context.state
        notes: dict[str, str | None] = {}
        while not state["over"] and state["to_move"] != state["seat"]:
            seat = state["to_move"]
            reply = await self._opponent_reply(context, seat, notes.pop(seat, None))
            notes[seat] = self._play(state, seat, reply)

    async def _opponent_reply(self, context: RolloutContext, seat: str, note: str | None) -> str:
        state, player = context.state, self.opponents[seat]
        if isinstance(player, PolicySeat):
            reply = player.policy(state, seat, context.rng)
            return str(await reply if inspect.isawaitable(reply) else reply)
        if isinstance(player, ModelSeat):
            client, model, sampling = player.client(), player.model, player.sampling
        else:
            client, model, sampling = context.client, context.model, context.sampling
        history = state["histories"].get(seat)
        if history is None:
            prompt = context.example.prompt
            if getattr(player, "system_prompt", None):
                prompt = [{"role": "system", "content": player.system_prompt}, *(m for m in prompt if m["role"] != "system")]
            history = state["histories"][seat] = list(prompt)
        history.append(user("\n".join(filter(None, [note, self.observe(state, seat)]))))
        try:
            response = await client.chat(history, model=model, sampling=sampling)
        except errors.EmptyResponseError:
            history.append({"role": "assistant", "content": ""})
            return ""  # an illegal move of that seat
        except errors.ModelError as exc:
            raise type(exc)(f"opponent {seat} ({player!r}): {exc}") from exc
        history.append(response.message)
        usage = state["seat_usage"].setdefault(seat, {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0})
        for key, value in response.usage.to_dict().items():
            usage[key] += value
        return response.message.get("content") or ""

    def _play(self, state: dict[str, Any], seat: str, reply: str) -> str | None:
        """Play one reply of `seat`; the note to tell it when the move was illegal."""
        try:
            move = self.play(state, seat, reply)
        except IllegalMove as exc:
            state["illegal_moves"][seat] += 1
            if state["illegal_moves"][seat] >= self.max_illegal:
                self._end(state, forfeit=seat)
                return None
            return self.illegal_note(state, seat, str(exc))
        state["moves"].append([seat, move])
        rewards = self.outcome(state)
        if rewards is None:
            state["to_move"] = self.next_seat(state, seat)
        else:
            self._end(state, rewards)
        return None

    def _end(self, state: dict[str, Any], rewards: dict[str, float] | None = None, forfeit: str | None = None) -> None:
        if forfeit is not None:
            rewards = {s: 0.0 if s == forfeit else 1.0 for s in self.seats}
        top = max(rewards.values())
        leaders = [s for s, r in rewards.items() if r == top]
        winner = leaders[0] if len(leaders) == 1 else None
        state.update(over=True, to_move=None, forfeit=forfeit, rewards=dict(rewards), winner=winner)


# -- rewards of the learner's seat ------------------------------------------------------------


def seat_reward(state) -> float:
    """The learner's entry of `state["rewards"]`."""
    return float(state["rewards"][state["seat"]])


def won(state) -> float:
    return float(state["winner"] == state["seat"])


def drew(state) -> float:
    return float(state["winner"] is None)


def lost(state) -> float:
    return float(state["winner"] not in (None, state["seat"]))


def illegal_moves(state) -> float:
    return float(state["illegal_moves"][state["seat"]])


def forfeited(state) -> float:
    return float(state["forfeit"] == state["seat"])


def multi_agent_rubric(parser: Parser | None = None) -> Rubric:
    """`seat_reward` (weight 1) and the learner's weight-0 metrics."""
    funcs = [seat_reward, won, drew, lost, illegal_moves, forfeited]
    return Rubric(funcs, weights=[1.0] + [0.0] * (len(funcs) - 1), parser=parser)
