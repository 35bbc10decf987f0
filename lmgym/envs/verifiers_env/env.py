"""`VerifiersEnv`: a verifiers environment under lmgym's runner, and loading one by name."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from lmgym import errors
from lmgym.envs.context import RolloutContext
from lmgym.envs.tools import StatefulToolEnv
from lmgym.envs.verifiers_env.constants import DEFAULT_MAX_TURNS, EPISODE, PREFIX, import_verifiers
from lmgym.envs.verifiers_env.episode import Agent, Agents, Episode
from lmgym.envs.verifiers_env.features import agent_sampling, single_agent, unsupported_features
from lmgym.envs.verifiers_env.messages import task_prompt, typed_message
from lmgym.envs.verifiers_env.tools import toolset_tools
from lmgym.errors import RewardError
from lmgym.rubrics.rubric import Rubric
from lmgym.types import Messages, Rollout, RolloutError

logger = logging.getLogger(__name__)


class VerifiersEnv(StatefulToolEnv):
    """A verifiers 0.4 environment (`vf.Env` over its taskset) under lmgym's runner."""

    def __init__(self, vf_env: Any, tasks: list[Any], *, max_turns: int | None = None):
        self.vf_env = vf_env
        self.role, self.agent_spec = single_agent(vf_env)
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
        episode = Episode(seed_task=self.tasks[context.example.id])
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

    async def _open(self, episode: Episode) -> Messages:
        agents = Agents({self.role: Agent(episode, self.agent_spec, self.role)})
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

    async def _drive(self, episode: Episode, agents: Agents) -> None:
        """The env's own `setup` and `run`; how it ended goes to the loop."""
        failure: BaseException | None = None
        try:
            await self.vf_env.setup(agents)
            await self.vf_env.run(episode.seed_task, agents)
        except Exception as exc:  # the environment's failure, recorded on the rollout
            failure = exc
        await episode.to_loop.put(("end", failure))

    async def on_reply(self, messages: Messages, state: dict[str, Any]) -> None:
        episode: Episode = state[EPISODE]
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
        episode: Episode = state[EPISODE]
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

    async def _first_stop(self, boundary: str, episode: Episode, value: Any) -> str | None:
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
        episode: Episode | None = state.get(EPISODE)
        if episode is not None:
            if episode.trace is not None and episode.trace.stop_condition is None:
                episode.trace.stop(state.get("stop_reason") or "done")
            await self._close(episode)

    async def _close(self, episode: Episode) -> None:
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

    async def _score(self, episode: Episode, *, ok: bool) -> tuple[dict[str, float], dict[str, float], float]:
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
