"""Environments written for `verifiers` 0.4, run by lmgym's loop: `lmgym eval vf:NAME`.

A verifiers 0.4 environment is a *taskset* package: a module exporting (in `__all__`) a
`vf.Taskset` subclass whose `load()` yields `vf.Task`s (the prompt, and `@vf.reward` /
`@vf.metric` / `@vf.stop` methods), optionally a `vf.Env` subclass whose `run(task,
agents)` drives a conversation turn by turn (`agents.agent.interaction(task)`, then
`turn(message)`), and tools as `vf.Toolset`s (`@vf.tool` methods) from `Task.toolsets`
or `Taskset.toolsets`. `NAME` is resolved as `vf-eval NAME` resolves it
(`verifiers.v1.tasksets.NAME`, else the installed module `NAME`).

lmgym's loop plays verifiers' `null` harness, the tool-calling chat loop: the model
answers until it replies without a tool call, which ends a *segment*. The environment's
`run()` is a coroutine that owns the conversation, so it runs beside the loop as a task
of its own: each `turn(message)` it makes hands the message to the loop, which asks the
model and hands the segment back. Tools run in this process (a toolset instance per
rollout; its `state` is the trace's, as the real state channel would make it). After
the rollout the task's own `score` runs on a `vf.Trace` built from the transcript, then
the env's `finalize`: each reward and metric is an lmgym metric, the weighted sum the
reward.

What needs verifiers' machinery that lmgym does not run (a runtime or container, the
taskset's own harness, several agents, judges, intercepts, infinite tasksets) is named
when the environment loads, not half-way through a run. `verifiers` 0.4 requires
`openai<3` and `mcp==2.0.0`, so it lives in a venv of its own with lmgym (without the
`mcp` extra): `make verifiers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import typing
from collections.abc import Callable, Mapping
from typing import Any

from lmgym import errors
from lmgym.envs.context import RolloutContext
from lmgym.envs.tools import StatefulToolEnv
from lmgym.errors import RewardError
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Message, Messages, Rollout, RolloutError

logger = logging.getLogger(__name__)

PREFIX = "vf:"
EPISODE = "vf_episode"  # the rollout's state key (and the hidden argument of every tool)
DEFAULT_MAX_TURNS = 20
INSTALL_HINT = (
    "verifiers environments need the `verifiers` package (0.4), which requires openai<3 and "
    "mcp==2.0.0 while lmgym's main venv has openai 3.x and its `mcp` extra needs mcp>=2.3, "
    "so it lives in a venv of its own: `make verifiers` builds ~/.cache/lmgym/verifiers-venv "
    "(verifiers==0.4.0 and lmgym without the mcp extra); run "
    "~/.cache/lmgym/verifiers-venv/bin/lmgym eval vf:NAME there"
)
CLOSE_TIMEOUT_S = 10.0


def import_verifiers():
    """`verifiers.v1`, or a UsageError saying how to get it (it cannot share lmgym's venv)."""
    try:
        import verifiers.v1 as vf
    except ImportError as exc:
        raise errors.UsageError(f"{INSTALL_HINT} ({exc})") from None
    return vf


# -- messages ------------------------------------------------------------------------------


def task_prompt(data: Any) -> Messages:
    """The messages a task opens with: its system prompt, then its prompt (text or messages)."""
    from verifiers.v1.dialects.chat import message_to_wire

    prompt = data.prompt
    if prompt is None:
        messages = []
    elif isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [message_to_wire(m) for m in prompt]
    system = [{"role": "system", "content": data.system_prompt}] if data.system_prompt else []
    return [*system, *messages]


def turn_messages(message: Any) -> Messages:
    """What `Interaction.turn` accepts (a string, wire dicts or typed messages) as wire dicts."""
    from verifiers.v1.dialects.chat import message_to_wire

    if message is None:
        return []
    if isinstance(message, str):
        return [{"role": "user", "content": message}]
    return [dict(m) if isinstance(m, Mapping) else message_to_wire(m) for m in message]


def typed_message(message: Message) -> Any:
    """A wire message as verifiers' typed one; a malformed tool call keeps its text only
    (lmgym answers it as a bad call, and the trace must still hold the turn)."""
    from verifiers.v1 import AssistantMessage
    from verifiers.v1.dialects.chat import parse_message

    try:
        return parse_message(dict(message))
    except (KeyError, TypeError, ValueError):
        return AssistantMessage(content=str(message.get("content") or ""))


# -- unsupported features --------------------------------------------------------------------


def _overrides(cls: type, base: type, name: str) -> bool:
    return getattr(cls, name) is not getattr(base, name)


def _needs_runtime(fn: Callable[..., Any]) -> bool:
    param = inspect.signature(fn).parameters.get("runtime")
    return param is not None and param.default is inspect.Parameter.empty


def unsupported_features(vf: Any, env: Any, task: Any) -> list[str]:
    """Each feature of this verifiers environment that lmgym's loop cannot honour, named."""
    from verifiers.v1.utils.decorators import discover_decorated

    found = []
    roles = env.config.agent_harnesses()
    if len(roles) != 1:
        found.append(f"{type(env).__name__} declares {len(roles)} agents ({', '.join(roles)}); lmgym plays one")
    for role, harness in roles.items():
        if harness.id not in ("bash", "null"):
            found.append(f"agent {role!r} runs the harness {harness.id!r}; lmgym's loop is the `null` chat harness")
    task_cls = type(task)
    if task_cls.NEEDS_CONTAINER:
        found.append(f"{task_cls.__name__}.NEEDS_CONTAINER (a container runtime)")
    for hook in ("setup", "finalize", "stage_verifier", "runtime_env"):
        if _overrides(task_cls, vf.Task, hook):
            found.append(f"{task_cls.__name__}.{hook} (it works in a runtime)")
    if intercepts := discover_decorated(task, "intercept"):
        found.append(f"@vf.intercept hooks ({', '.join(fn.__name__ for fn in intercepts)})")
    for kind in ("reward", "metric"):
        found += [f"@vf.{kind} {fn.__name__} (it needs a runtime)" for fn in task.hooks(kind) if _needs_runtime(fn)]
    if task.config.judges:
        found.append(f"judges ({', '.join(j.id for j in task.config.judges)})")
    spec = _single_agent(env)[1]
    for limit in ("max_input_tokens", "max_output_tokens", "max_total_tokens"):  # lmgym's loop counts turns
        if getattr(spec, limit) is not None:
            found.append(f"the agent's {limit} limit")
    return found


def agent_sampling(spec: Any) -> dict[str, Any] | None:
    """The agent's own sampling values, as the environment's default sampling (a run's
    `-S` still overrides them, as it does any environment's)."""
    if spec.sampling is None:
        return None
    return spec.sampling.model_dump(exclude_unset=True, exclude_none=True) or None


def _single_agent(env: Any) -> tuple[str, Any]:
    from verifiers.v1.configs.agent import agent_config_fields

    return next(iter(agent_config_fields(env.config).items()))


# -- tools -----------------------------------------------------------------------------------


def tool_name(server: Any, method: Callable[..., Any]) -> str:
    """`<server>_<tool>`, as verifiers' chat program advertises MCP tools."""
    name = getattr(method, "tool_name", None) or method.__name__
    return f"{server.server_name}_{name}" if server.server_name else name


def tool_function(server_key: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    """A function lmgym's `StatefulToolEnv` offers: the toolset method's own parameters and
    docstring, plus the hidden rollout it finds its toolset instance and state in."""
    from verifiers.v1.mcp.server import _call_state  # the state a tool's `self.state` reads

    attr = method.__name__

    async def call(vf_episode: _Episode, **arguments: Any) -> Any:
        instance = vf_episode.toolsets[server_key]
        token = _call_state.set(vf_episode.trace.state)
        try:
            result = getattr(instance, attr)(**arguments)
            return await result if inspect.isawaitable(result) else result
        finally:
            _call_state.reset(token)

    signature = inspect.signature(method)
    hidden = inspect.Parameter(EPISODE, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    call.__signature__ = signature.replace(parameters=[hidden, *signature.parameters.values()])
    call.__annotations__ = {k: v for k, v in typing.get_type_hints(method).items() if k != "return"}
    call.__name__ = name
    call.__doc__ = method.__doc__
    return call


def toolset_tools(key: str, server: Any) -> list[Callable[..., Any]]:
    """The `@vf.tool` methods of one toolset, as lmgym tool functions."""
    from verifiers.v1.utils.decorators import discover_decorated

    if getattr(server.config, "url", None):
        raise errors.UsageError(f"toolset {type(server).__name__} is a remote server ({server.config.url}); lmgym runs toolsets in process")
    return [tool_function(key, tool_name(server, fn), fn) for fn in discover_decorated(server, "tool")]


# -- one rollout -----------------------------------------------------------------------------


@dataclasses.dataclass
class _Episode:
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


class _Interaction:
    """What `agent.interaction(task)` yields to the env's `run()`: `turn()` runs one
    segment of lmgym's loop; `trace` is the live trace."""

    def __init__(self, episode: _Episode):
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


class _Agent:
    """The single seat of the env's `run()`: `interaction(task)` and `run(task)`."""

    def __init__(self, episode: _Episode, spec: Any, name: str):
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
        yield _Interaction(episode)
        if episode.trace.stop_condition is None:
            episode.trace.stop("user_closed")

    async def run(self, task: Any, **_: Any) -> Any:
        if task.data.prompt is None:
            raise ValueError("task has no prompt and no user to open the conversation")
        async with self.interaction(task) as chat:
            await chat.turn()
            return chat.trace


class _Agents:
    """The env's agents by role name, as `vf.Agents` addresses them."""

    def __init__(self, agents: dict[str, _Agent]):
        self._agents = agents

    def __getattr__(self, name: str) -> _Agent:
        agents = self.__dict__.get("_agents") or {}
        if name not in agents:
            raise AttributeError(f"no agent {name!r}; this config declares {sorted(agents)}")
        return agents[name]


# -- the environment ---------------------------------------------------------------------------


class VerifiersEnv(StatefulToolEnv):
    """A verifiers 0.4 environment (`vf.Env` over its taskset) under lmgym's runner."""

    def __init__(self, vf_env: Any, tasks: list[Any], *, max_turns: int | None = None):
        self.vf_env = vf_env
        self.role, self.agent_spec = _single_agent(vf_env)
        self.tasks = {_task_id(task): task for task in tasks}
        if len(self.tasks) != len(tasks):
            raise errors.DatasetError(f"verifiers taskset {vf_env.config.taskset.id!r}: two tasks share an id (TaskData.id)")
        first = tasks[0]
        self.task_config = first.config
        self.task_toolsets = type(first).toolsets(first.config)
        self.shared_toolsets = {_server_key("shared", i, s): s for i, s in enumerate(type(vf_env.taskset).toolsets(vf_env.taskset.config))}
        templates = {**self.shared_toolsets, **{_server_key("task", i, s): s for i, s in enumerate(self.task_toolsets)}}
        tools = [fn for key, server in templates.items() for fn in toolset_tools(key, server)]
        self.stops = _classify_stops(first)
        super().__init__(
            eval_dataset=[_row(task_id, task) for task_id, task in self.tasks.items()],
            tools=tools,
            hidden_args=[EPISODE],
            max_turns=max_turns or self.agent_spec.max_turns or DEFAULT_MAX_TURNS,
            sampling_args=agent_sampling(self.agent_spec),
        )
        if not tools:  # no tool counts on a rubric of a taskset without tools
            self.tools, self.rubric = None, Rubric(parser=self.parser)

    # -- what a whole run shares ---------------------------------------------------------
    async def start(self) -> None:
        for server in self.shared_toolsets.values():
            await server.setup()
        await self.vf_env.start()

    async def stop(self) -> None:
        try:
            await self.vf_env.stop()
        finally:
            for server in self.shared_toolsets.values():
                await _close_toolset(server)

    # -- one rollout ------------------------------------------------------------------------
    async def run_rollout(self, context: RolloutContext, prompt: Messages | None = None) -> Rollout:
        """Start the env's `run()`, wait for its first turn (a bare one on a prompted task,
        or the message that opens a prompt-less one), then run lmgym's loop on it."""
        episode = _Episode(seed_task=self.tasks[context.example.id])
        context.state[EPISODE] = episode
        try:
            opening = await self._open(episode)
        except Exception as exc:  # the environment's failure before the first turn is this rollout's
            await self._close(episode)
            if getattr(exc, "fatal", False):
                raise
            kind = exc.kind if isinstance(exc, errors.LmgymError) else errors.EnvironmentHookError.kind
            return Rollout(example=context.example, index=context.index, state=context.state,
                           error=RolloutError(kind, f"{type(exc).__name__}: {exc}"))
        episode.record(opening, sampled=False)
        episode.segment_start = len(episode.trace.nodes)
        return await super().run_rollout(context, prompt=opening)

    async def _open(self, episode: _Episode) -> Messages:
        agents = _Agents({self.role: _Agent(episode, self.agent_spec, self.role)})
        episode.driver = asyncio.create_task(self._drive(episode, agents))
        await episode.next_action()
        if episode.ended:
            raise errors.EnvironmentHookError(f"{type(self.vf_env).__name__}.run() ran no agent turn")
        for key, server in enumerate(type(episode.task).toolsets(episode.task.config)):
            instance = server
            await instance.setup()
            await instance.setup_task(episode.task)
            episode.toolsets[_server_key("task", key, server)] = instance
        episode.toolsets.update(self.shared_toolsets)
        if self.tools:
            from verifiers.v1.dialects.chat import parse_tools

            episode.trace.tools = parse_tools(self.tools) or []
        return [*episode.prompt, *episode.pending]

    async def _drive(self, episode: _Episode, agents: _Agents) -> None:
        """The env's own `setup` and `run`; how it ended goes to the loop."""
        failure: BaseException | None = None
        try:
            await self.vf_env.setup(agents)
            await self.vf_env.run(episode.seed_task, agents)
        except Exception as exc:  # the environment's failure, recorded on the rollout
            failure = exc
        await episode.to_loop.put(("end", failure))

    async def on_reply(self, messages: Messages, state: dict[str, Any]) -> None:
        episode: _Episode = state[EPISODE]
        reply = messages[-1]
        episode.record([reply], sampled=True)
        if fired := await self._first_stop("response", episode, reply):
            episode.trace.stop(fired)
        if reply.get("tool_calls") and episode.trace.stop_condition is None:
            return  # the segment goes on: env_response runs the tools
        await episode.end_segment()

    async def is_done(self, messages: Messages, state: dict[str, Any]) -> bool:
        return state[EPISODE].ended

    async def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        episode: _Episode = state[EPISODE]
        if messages[-1].get("tool_calls"):
            reply = await super().env_response(messages, state)
            episode.record(reply, sampled=False)
            if fired := await self._first_stop("request", episode, [*messages, *reply]):
                episode.trace.stop(fired)
                await episode.end_segment()
            return reply
        reply, episode.pending = episode.pending, []
        episode.record(reply, sampled=False)
        if fired := await self._first_stop("request", episode, [*messages, *reply]):
            episode.trace.stop(fired)
            await episode.end_segment(terminated=True)
        return reply

    async def _first_stop(self, boundary: str, episode: _Episode, value: Any) -> str | None:
        """The name of the first `@vf.stop` that fires: on a reply (`response`), or before
        the next model call (`request`, with the trace's own stops)."""
        from verifiers.v1 import Request, Response, Trace
        from verifiers.v1.dialects.chat import parse_tools
        from verifiers.v1.session import call_hook

        if boundary == "response":
            candidate = {Response: Response(id="lmgym", created=0, model="", message=typed_message(value), finish_reason=None)}
            hooks = self.stops[Response]
        else:
            tools = parse_tools(self.tools) if self.tools else None
            candidate = {Request: Request(messages=[typed_message(m) for m in value], tools=tools)}
            hooks = [*self.stops[Trace], *self.stops[Request]]
        for hook in hooks:
            result = await call_hook(hook, {**candidate, Trace: episode.trace})
            if not isinstance(result, bool):
                raise errors.EnvironmentHookError(f"@vf.stop {hook.__name__} must return bool, got {type(result).__name__}")
            if result:
                return hook.__name__
        return None

    async def teardown_state(self, state: dict[str, Any]) -> None:
        episode: _Episode | None = state.get(EPISODE)
        if episode is not None:
            if episode.trace is not None and episode.trace.stop_condition is None:
                episode.trace.stop(state.get("stop_reason") or "done")
            await self._close(episode)

    async def _close(self, episode: _Episode) -> None:
        await episode.finish_driver()
        for key, instance in episode.toolsets.items():
            if key not in self.shared_toolsets:
                await _close_toolset(instance)

    # -- scoring ----------------------------------------------------------------------------
    async def score_group(self, rollouts: list[Rollout]) -> None:
        """lmgym's tool counts, then the task's rewards and metrics on its trace and the
        env's `finalize`: each one a metric, their weighted sum the reward."""
        await super().score_group(rollouts)
        for rollout in rollouts:
            episode = rollout.state.pop(EPISODE, None)
            if rollout.error is not None or episode is None or episode.trace is None:
                continue
            try:
                rewards, metrics, total = await self._score(episode, ok=True)
            except Exception as exc:
                rollout.error = RolloutError(RewardError.kind, f"verifiers scoring raised {type(exc).__name__}: {exc}")
                continue
            rollout.metrics.update({**rewards, **metrics})
            rollout.reward = total

    async def _score(self, episode: _Episode, *, ok: bool) -> tuple[dict[str, float], dict[str, float], float]:
        from verifiers.v1 import EnvInfo, Episode, TraceTask

        trace = episode.trace
        trace.is_completed, trace.ok = True, ok
        await episode.task.score(trace)
        task = episode.seed_task
        vf_episode = Episode(
            env=EnvInfo(id=self.vf_env.config.env_id),
            task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
            traces=[trace],
            ok=ok,
        )
        await self.vf_env.finalize(task, vf_episode)
        unscored = [name for name, value in {**trace.rewards, **trace.metrics}.items() if value is None]
        if unscored:
            raise RewardError(f"not scored: {', '.join(unscored)}")
        rewards = {name: reward.score for name, reward in trace.rewards.items()}
        return rewards, dict(trace.metrics), trace.reward


def _task_id(task: Any) -> Any:
    """The task's durable id when its source has one, else its position in the taskset."""
    return task.data.id if task.data.id is not None else task.data.idx


def _row(task_id: Any, task: Any) -> dict[str, Any]:
    data = task.data
    info = data.model_dump(mode="json", exclude_defaults=True, exclude={"prompt", "system_prompt", "idx", "id"})
    info.pop("answer", None)
    return {"id": task_id, "prompt": task_prompt(data), "answer": getattr(data, "answer", None), "info": info}


def _server_key(scope: str, index: int, server: Any) -> str:
    return f"{scope}:{index}:{type(server).__name__}"


def _classify_stops(task: Any) -> dict[type, list[Callable[..., Any]]]:
    """The task's `@vf.stop` hooks by the boundary they watch (Request, Response or Trace)."""
    from verifiers.v1 import Request, Response, Trace
    from verifiers.v1.session import hook_boundary

    stops: dict[type, list[Callable[..., Any]]] = {Request: [], Response: [], Trace: []}
    for hook in task.hooks("stop"):
        stops[hook_boundary(hook, allow_trace=True)].append(hook)
    return stops


async def _close_toolset(server: Any) -> None:
    """Close what the toolset's `setup` entered on its exit stack."""
    try:
        await server._exit_stack.aclose()
    except Exception:
        logger.exception("closing toolset %s failed", type(server).__name__)


def split_args(args: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """`-a` arguments: the taskset's config fields, `env` (the env's own config fields)
    and `max_turns` (lmgym's turn budget)."""
    taskset = {k: v for k, v in args.items() if k not in ("env", "max_turns")}
    env = args.get("env") or {}
    if not isinstance(env, Mapping):
        raise errors.EnvironmentArgumentError(f"the `env` argument must be a JSON object of the env's config fields, got {env!r}")
    return taskset, dict(env), args.get("max_turns")


def load_verifiers_environment(name: str, **args: Any) -> VerifiersEnv:
    """The verifiers environment `name` (a taskset id, as `vf-eval NAME` takes it) as an
    lmgym environment; `args` are its taskset's config fields (`{"num_tasks": 10}`), plus
    `env` (its env's config fields) and `max_turns`."""
    vf = import_verifiers()
    import pydantic

    taskset_args, env_args, max_turns = split_args(args)
    try:
        config = vf.resolve_env_config({**env_args, "taskset": {**taskset_args, "id": name}})
        vf_env = vf.load_environment(config)
    except (ModuleNotFoundError, AttributeError, TypeError) as exc:
        raise errors.EnvironmentNotFoundError(f"verifiers environment {name!r}: {exc}") from None
    except (pydantic.ValidationError, ValueError) as exc:
        raise errors.EnvironmentArgumentError(f"verifiers environment {name!r}: {exc}") from None
    if vf_env.taskset.INFINITE:
        raise errors.UsageError(f"verifiers environment {name!r}: its taskset is infinite; lmgym evaluates a finite one")
    tasks = list(vf_env.taskset)
    if not tasks:
        raise errors.DatasetError(f"verifiers environment {name!r}: its taskset loaded no tasks")
    found = unsupported_features(vf, vf_env, tasks[0])
    if found:
        raise errors.UsageError(f"verifiers environment {name!r} uses what lmgym's adapter does not support: {'; '.join(found)}")
    return VerifiersEnv(vf_env, tasks, max_turns=max_turns)


def is_verifiers_name(name: str) -> bool:
    return name.startswith(PREFIX)


__all__ = ["PREFIX", "VerifiersEnv", "import_verifiers", "is_verifiers_name", "load_verifiers_environment"]

