"""One rollout of a verifiers environment: its trace, and the interaction and agents its `run()` talks to."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

from lmgym import errors
from lmgym.envs.verifiers_env.constants import CLOSE_TIMEOUT_S
from lmgym.envs.verifiers_env.messages import task_prompt, turn_messages, typed_message
from lmgym.types import Messages


@dataclasses.dataclass
class Episode:
    """One rollout's verifiers side: its task and trace, toolset instances, and the
    channel between the env's `run()` (the driver) and lmgym's loop."""

    seed_task: Any
    task: Any = None
    trace: Any = None
    prompt: Messages = dataclasses.field(default_factory=list)
    toolsets: dict[str, Any] = dataclasses.field(default_factory=dict)
    to_loop: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    to_driver: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    driver: asyncio.Task | None = None
    pending: Messages = dataclasses.field(default_factory=list)
    segment_start: int = 0
    ended: bool = False
    over: bool = False  # a terminated segment was delivered: no further turns

    def record(self, messages: Messages, *, sampled: bool) -> None:
        """Append messages to the trace's one branch (`sampled`: the model's replies)."""
        from verifiers.v1 import MessageNode

        for message in messages:
            parent = len(self.trace.nodes) - 1 if self.trace.nodes else None
            self.trace.nodes.append(MessageNode(parent=parent, message=typed_message(message), sampled=sampled))

    def segment(self) -> Any:
        """The model's replies and tool results since the last user turn, as a `vf.Segment`."""
        from verifiers.v1 import Segment

        nodes = self.trace.nodes[self.segment_start :]
        first = next((i for i, n in enumerate(nodes) if n.sampled), len(nodes))
        return Segment(messages=[n.message for n in nodes[first:]], root_reply=self.trace.root_reply)

    async def end_segment(self, *, terminated: bool = False) -> None:
        """Hand the driver its segment, then wait for what it does next: another user
        turn (kept for `env_response`) or the end of its `run()`."""
        from verifiers.v1 import Segment

        self.over = self.over or terminated
        await self.to_driver.put(Segment(messages=[], terminated=True) if terminated else self.segment())
        self.segment_start = len(self.trace.nodes)
        await self.next_action()

    async def next_action(self) -> None:
        kind, value = await self.to_loop.get()
        if kind == "turn":
            self.pending = value
            return
        self.ended = True
        if value is not None:
            raise errors.EnvironmentHookError(f"verifiers Env.run raised {type(value).__name__}: {value}") from value

    async def finish_driver(self) -> None:
        """Let `run()` end on its own (every further turn is terminated), else cancel it."""
        from verifiers.v1 import Segment

        if self.driver is None:
            return
        self.over = True
        while not self.to_driver.empty():
            self.to_driver.get_nowait()
        self.to_driver.put_nowait(Segment(messages=[], terminated=True))
        try:
            await asyncio.wait_for(asyncio.shield(self.driver), CLOSE_TIMEOUT_S)
        except Exception:  # it outlived CLOSE_TIMEOUT_S (its failure was already reported)
            self.driver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.driver


class Interaction:
    """What `agent.interaction(task)` yields to the env's `run()`: `turn()` runs one
    segment of lmgym's loop; `trace` is the live trace."""

    def __init__(self, episode: Episode):
        self.episode = episode
        self.started = False

    @property
    def trace(self) -> Any:
        return self.episode.trace

    async def turn(self, message: Any = None) -> Any:
        from verifiers.v1 import Segment

        episode = self.episode
        if episode.over:
            raise RuntimeError("the exchange is over (the run ended); read interaction.trace")
        prompted = not self.started and episode.task.data.prompt is not None
        if message is None and not prompted:
            raise ValueError("nothing to run a turn on: a bare turn() takes a prompted task's opening reply")
        if message is not None and prompted:
            raise ValueError("the task's prompt opens this exchange: take its first reply with a bare turn() first")
        self.started = True
        if episode.trace.stop_condition is not None:  # a @stop fired: this turn is not served
            episode.over = True
            return Segment(messages=[], terminated=True)
        await episode.to_loop.put(("turn", turn_messages(message)))
        return await episode.to_driver.get()

    async def close(self) -> Any:
        return self.episode.trace


class Agent:
    """The single seat of the env's `run()`: `interaction(task)` and `run(task)`."""

    def __init__(self, episode: Episode, spec: Any, name: str):
        self.episode = episode
        self.spec = spec
        self.name = name
        self.trainable = True

    @contextlib.asynccontextmanager
    async def interaction(self, task: Any, **_: Any):
        from verifiers.v1 import AgentInfo, Trace, TraceTask
        from verifiers.v1.state import state_cls

        episode = self.episode
        if episode.trace is not None:
            raise RuntimeError("lmgym plays one interaction per rollout; this run() opened a second")
        episode.task = task
        episode.trace = Trace(
            task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
            agent=AgentInfo(config=self.spec, name=self.name),
            state=state_cls(type(task))(),
        )
        episode.prompt = task_prompt(task.data)
        yield Interaction(episode)
        if episode.trace.stop_condition is None:
            episode.trace.stop("user_closed")

    async def run(self, task: Any, **_: Any) -> Any:
        if task.data.prompt is None:
            raise ValueError("task has no prompt and no user to open the conversation")
        async with self.interaction(task) as chat:
            await chat.turn()
            return chat.trace


class Agents:
    """The env's agents by role name, as `vf.Agents` addresses them."""

    def __init__(self, agents: dict[str, Agent]):
        self._agents = agents

    def __getattr__(self, name: str) -> Agent:
        agents = self.__dict__.get("_agents") or {}
        if name not in agents:
            raise AttributeError(f"no agent {name!r}; this config declares {sorted(agents)}")
        return agents[name]
