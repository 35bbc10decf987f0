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

from lmgym.envs.verifiers_env.constants import PREFIX, import_verifiers
from lmgym.envs.verifiers_env.env import VerifiersEnv, is_verifiers_name, load_verifiers_environment

__all__ = ["PREFIX", "VerifiersEnv", "import_verifiers", "is_verifiers_name", "load_verifiers_environment"]
