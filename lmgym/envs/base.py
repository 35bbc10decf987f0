"""`Environment`: a dataset, a parser, a rubric, sampling defaults, and the one rollout loop.

The loop is multi-turn; single-turn is the loop stopping after one reply. Per turn:
ask the model, let the environment act on the reply (`on_reply`: play a move, record a
guess), then `is_done`; if not done, the environment *always* answers (`env_response`:
tool results, feedback) before the turn budget is checked, so the last action of an
agent that ran out of turns is still executed and seen by the rubric (the bug of
verifiers #465 was to stop before it). `is_done` is only a question: it may be asked
more than once per turn, so nothing is played there.

An environment object serves many rollouts at once. What belongs to one rollout (its
example, tools, seat, client) reaches the hooks in a `RolloutContext`, given to each hook
that declares a `context` parameter; hooks written without one are called as before.

`Environment` is an abstract base class: a hook that a kind of environment leaves to its
author (`MultiTurnEnv.env_response`, a game's `play`) is an `abstractmethod`, so an
environment that forgets it fails with a TypeError naming it when it is created, not
half-way through a run.

`state` is a plain dict for the environment author's own fields; lmgym's own bookkeeping
(`turn`, `stop_reason`) lives in it under documented keys, everything else is the
Rollout dataclass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random
import time
from abc import ABC
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmgym import errors
from lmgym.clients.base import ModelClient
from lmgym.envs.context import RolloutContext, declares_context
from lmgym.parsers.parser import Parser
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Example, Message, Messages, Rollout, RolloutError, Turn

logger = logging.getLogger(__name__)

DatasetLike = Iterable[Mapping[str, Any]]  # a datasets.Dataset or a list of dicts
RESERVED_COLUMNS = {"prompt", "question", "answer", "info", "task", "id"}


def with_system_and_shots(prompt: Messages, system_prompt: str | None, few_shot: Sequence[Message]) -> Messages:
    """System message first (the row's own wins over the environment's), then few-shot."""
    if prompt and prompt[0].get("role") == "system":
        system, rest = prompt[:1], prompt[1:]
    else:
        system, rest = ([{"role": "system", "content": system_prompt}] if system_prompt else []), prompt
    return [*system, *few_shot, *rest]


def to_examples(
    dataset: DatasetLike,
    *,
    system_prompt: str | None = None,
    few_shot: Sequence[Message] = (),
    name: str = "dataset",
) -> list[Example]:
    """Normalise rows into Examples: a `prompt` column of messages is used as it is, a
    `question` column becomes one user message; the system prompt and few-shot messages
    go first. Extra columns are kept in `info` (and reward functions can ask for them)."""
    columns = getattr(dataset, "column_names", None)
    examples = []
    for i, row in enumerate(dataset):
        if columns is None and i == 0:
            columns = list(row)
        if "prompt" in row:
            prompt = list(row["prompt"])
            if not all(isinstance(m, Mapping) and "role" in m for m in prompt):
                raise errors.DatasetError(f"{name}: row {i}: `prompt` must be a list of chat messages with a 'role'")
        elif "question" in row:
            prompt = [{"role": "user", "content": str(row["question"])}]
        else:
            raise errors.DatasetError(
                f"{name} has neither a `prompt` column (chat messages) nor a `question` column; "
                f"its columns are: {', '.join(map(str, columns or row))}"
            )
        prompt = with_system_and_shots(prompt, system_prompt, few_shot)
        info = dict(row.get("info") or {})
        info.update({k: v for k, v in row.items() if k not in RESERVED_COLUMNS})
        examples.append(
            Example(
                id=row.get("id", i),
                prompt=prompt,
                answer=row.get("answer"),
                info=info,
                task=str(row.get("task") or "default"),
            )
        )
    return examples


class Environment(ABC):  # noqa: B024 - the kinds below declare the hooks their authors must write
    """Base class of every environment. Subclasses override the hooks they need; the
    kinds below (`MultiTurnEnv`, the games) mark the ones their authors must write."""

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls.__abstractmethods__:  # Python's own message names neither the base nor the fix
            raise TypeError(f"{cls.__name__} cannot be created: {_missing_hooks(cls)}")
        return super().__new__(cls)

    def __init__(
        self,
        dataset: DatasetLike | None = None,
        eval_dataset: DatasetLike | None = None,
        *,
        system_prompt: str | None = None,
        few_shot: Sequence[Message] = (),
        parser: Parser | None = None,
        rubric: Rubric | None = None,
        sampling_args: Mapping[str, Any] | None = None,
        max_turns: int = 10,
        tools: list[dict[str, Any]] | None = None,
        sft_examples: Callable[..., list[dict[str, Any]]] | None = None,
        pass_metric: str = "reward",
        pass_threshold: float = 1.0,
        audit_skip: Mapping[str, str] | None = None,
    ):
        """`sft_examples(seed=...)`, when given, returns warm-start rows
        `{"prompt": messages, "completion": messages}` from a teacher the environment
        knows (an exact solver, a noisy one): `lmgym train` with `sft.warm_start` uses it.

        A rollout *passes* (for pass@k) when `pass_metric` (the reward, or one of the
        rubric's metrics such as `tests_passed_all`) is at least `pass_threshold`: declare
        it when a reward of 1 does not mean solved (partial credit plus a format bonus).

        `audit_skip` maps reward-hacking audit checks that do not apply to this
        environment to the reason, e.g. `{"reward_without_answer": "graded on the final
        database state"}`; `lmgym audit` skips them and says why."""
        if dataset is None and eval_dataset is None:
            raise errors.DatasetError(f"{type(self).__name__} needs a dataset or an eval_dataset")
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.parser = parser or (rubric.parser if rubric else Parser())
        self.rubric = rubric or Rubric(parser=self.parser)
        self.sampling_args = dict(sampling_args or {})
        self.max_turns = max_turns
        self.tools = tools
        self.sft_examples = sft_examples
        self.pass_metric = pass_metric
        self.pass_threshold = pass_threshold
        self.audit_skip = dict(audit_skip or {})
        name = type(self).__name__
        kwargs = {"system_prompt": system_prompt, "few_shot": few_shot}
        self.dataset = to_examples(dataset, name=f"{name} dataset", **kwargs) if dataset is not None else None
        self.eval_dataset = (
            to_examples(eval_dataset, name=f"{name} eval_dataset", **kwargs)
            if eval_dataset is not None
            else None
        )

    # -- data ----------------------------------------------------------------------------
    def get_eval_examples(self, n: int = -1, seed: int | None = None) -> list[Example]:
        """The first `n` evaluation examples (all when n < 0), shuffled first if `seed`."""
        examples = list(self.eval_dataset if self.eval_dataset is not None else self.dataset)
        if seed is not None:
            random.Random(seed).shuffle(examples)
        return examples if n < 0 else examples[:n]

    def use_run_dir(self, run_dir: Path) -> None:
        """Called with the run's directory before a run, so the rubric can keep state there."""
        self.rubric.use_run_dir(run_dir)

    @property
    def has_group_functions(self) -> bool:
        """Whether rollouts must be scored a whole example's group at a time."""
        return self.rubric.has_group_functions

    # -- hooks -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open what all rollouts share (MCP servers, a database) before the first one.
        When it fails, it closes what it had opened before raising."""

    async def stop(self) -> None:
        """Close what `start` opened: after the last rollout, also on error or Ctrl-C."""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Environment]:
        """`start` and `stop` around a block, in one task (MCP's anyio scopes require it)."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        """Prepare per-rollout state (open a sandbox, seed a game, ...)."""

    async def teardown_state(self, state: dict[str, Any]) -> None:
        """Release what `setup_state` opened. Runs once per rollout however it ended
        (finished, errored, cancelled); an exception here is logged, never raised."""

    async def on_reply(self, messages: Messages, state: dict[str, Any]) -> None:
        """Act on the model's latest reply (play its move, record its guess): called once
        per reply, before `is_done` is asked."""

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        """True when the episode is over. Asked after the model's reply and again after
        the environment's answer, so it only asks: acting on the reply is `on_reply`'s."""
        return False

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        """The environment's answer to the latest assistant message (tool results, feedback)."""
        return []

    def tools_for(self, example: Example) -> list[dict[str, Any]] | None:
        """The tool schemas offered to the model in rollouts of `example`: the
        environment's own, unless a subclass offers each example its own."""
        return self.tools

    def offers_tools(self, examples: Sequence[Example] = ()) -> bool:
        """Whether rollouts get tool schemas: the environment's own, or those `tools_for`
        gives the first of `examples` (an environment group's member with tools)."""
        return bool(self.tools) or any(self.tools_for(example) for example in examples[:1])

    def seat_for(self, example: Example, index: int) -> str | None:
        """The learner's seat in rollout `index` of `example` (multi-agent games), else None."""
        return None

    # -- the loop --------------------------------------------------------------------------
    def rollout_context(
        self,
        client: ModelClient,
        model: str,
        example: Example,
        *,
        index: int = 0,
        sampling_args: Mapping[str, Any] | None = None,
    ) -> RolloutContext:
        """A fresh context for one rollout: its own state, tools, seat and random generator."""
        return RolloutContext(
            env=self,
            example=example,
            index=index,
            state={},
            tools=self.tools_for(example),
            seat=self.seat_for(example, index),
            client=client,
            model=model,
            sampling={**self.sampling_args, **(sampling_args or {})},
            rng=random.Random(f"{example.id}/{index}"),
        )

    async def rollout(
        self,
        client: ModelClient,
        model: str,
        example: Example,
        *,
        index: int = 0,
        sampling_args: Mapping[str, Any] | None = None,
    ) -> Rollout:
        """Run one episode. Model and environment failures are recorded on the rollout;
        fatal model errors (unreachable server, rejected key) propagate to stop the run."""
        return await self.run_rollout(self.rollout_context(client, model, example, index=index, sampling_args=sampling_args))

    async def run_rollout(self, context: RolloutContext, prompt: Messages | None = None) -> Rollout:
        """The loop, for one context. `prompt`, when given, replaces the example's as the
        first messages the model sees (a game's opening view), and the rollout records
        the example with it, under the same id."""
        example = context.example if prompt is None else dataclasses.replace(context.example, prompt=prompt)
        rollout = Rollout(example=example, index=context.index, state=context.state)
        state = rollout.state
        state["turn"] = 0
        started = time.perf_counter()
        messages: Messages = list(example.prompt)
        try:
            await self._call("setup_state", context, state, example)
            while True:
                response = await context.client.chat(messages, model=context.model, sampling=context.sampling, tools=context.tools)
                rollout.usage.add(response.usage)
                turn = Turn(
                    assistant=response.message,
                    finish_reason=response.finish_reason,
                    token_ids=response.token_ids,
                    logprobs=response.logprobs,
                    prompt_token_ids=response.prompt_token_ids,
                )
                rollout.turns.append(turn)
                messages.append(response.message)
                state["turn"] += 1
                await self._call("on_reply", context, messages, state)
                if await self._call("is_done", context, messages, state):
                    state.setdefault("stop_reason", "done")
                    break
                turn.env_messages = self._env_messages(await self._call("env_response", context, messages, state))
                messages.extend(turn.env_messages)
                if await self._call("is_done", context, messages, state):
                    state.setdefault("stop_reason", "done")
                    break
                if state["turn"] >= self.max_turns:
                    state["stop_reason"] = "max_turns"
                    break
        except errors.LmgymError as exc:  # a model, tool, judge or hook failure is this rollout's
            if exc.fatal:  # ... unless every rollout would fail alike: stop the run
                raise
            rollout.error = RolloutError(exc.kind, str(exc))
        finally:
            await self._teardown(context)
            rollout.latency_s = time.perf_counter() - started
        return rollout

    async def _teardown(self, context: RolloutContext) -> None:
        try:
            result = self._invoke(self.teardown_state, context, context.state)
            if inspect.isawaitable(result):
                await asyncio.shield(result)
        except Exception:
            logger.exception("%s.teardown_state failed", type(self).__name__)

    def _env_messages(self, reply: Any) -> list[Message]:
        """`env_response` must return a list of messages; anything else is this rollout's error."""
        if not isinstance(reply, (list, tuple)) or not all(isinstance(m, Mapping) for m in reply):
            raise errors.EnvironmentHookError(
                f"{type(self).__name__}.env_response must return a list of messages, got {_describe(reply)}"
            )
        return list(reply)

    @staticmethod
    def _invoke(hook: Callable[..., Any], context: RolloutContext, *args: Any) -> Any:
        """`hook(*args)`, plus `context=` when the hook declares it."""
        return hook(*args, context=context) if declares_context(hook) else hook(*args)

    async def _call(self, name: str, context: RolloutContext, *args: Any) -> Any:
        """Call hook `name`, written as `def` or `async def` as reward functions may be;
        what it raises, other than lmgym's own errors, is the environment's failure."""
        try:
            result = self._invoke(getattr(self, name), context, *args)
            return await result if inspect.isawaitable(result) else result
        except Exception as exc:
            if errors.passes_through(exc):
                raise
            raise errors.EnvironmentHookError(f"{type(self).__name__}.{name} raised {type(exc).__name__}: {exc}") from exc

    async def score_group(self, rollouts: Sequence[Rollout]) -> None:
        await self.rubric.score_group(rollouts)


def _missing_hooks(cls: type) -> str:
    """'it does not define env_response, which MultiTurnEnv leaves to its subclasses'."""
    declared: dict[str, list[str]] = {}
    for name in sorted(cls.__abstractmethods__):
        owner = next(base for base in cls.__mro__ if getattr(base.__dict__.get(name), "__isabstractmethod__", False))
        declared.setdefault(owner.__name__, []).append(name)
    parts = [f"{', '.join(names)}, which {owner} leaves to its subclasses" for owner, names in declared.items()]
    return f"it does not define {'; nor '.join(parts)}"


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"
