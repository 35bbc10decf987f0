"""The error tree: drawn in `lmgym/errors.py`'s docstring exactly as the classes are, with
the training and vLLM server errors and the signals environment authors raise; the signals
reach the model as feedback, and one that escapes is the environment's failure."""

from __future__ import annotations

import inspect
import re

import pytest

from lmgym import OpenAIClient, errors
from lmgym.envs.tools import ToolEnv
from lmgym.testing import ScriptedServer, tool_call


def drawn_tree() -> dict[str, str]:
    """{class name: parent name} as the docstring draws it (4 characters per level)."""
    parents, path = {}, []
    for line in errors.__doc__.splitlines():
        found = re.match(r"^    ((?:│   |    )*)[├└]── (\w+)", line)
        if line.strip() == "LmgymError":
            path = ["LmgymError"]
        elif found:
            depth = len(found.group(1)) // 4 + 1
            path = path[:depth] + [found.group(2)]
            parents[found.group(2)] = path[-2]
    return parents


def test_the_docstring_draws_every_error_under_its_real_parent():
    classes = {name: cls for name, cls in vars(errors).items() if inspect.isclass(cls) and issubclass(cls, errors.LmgymError)}
    real = {name: next(b for b in cls.__bases__ if issubclass(b, errors.LmgymError)).__name__ for name, cls in classes.items() if name != "LmgymError"}
    assert drawn_tree() == real
    assert {"TrainingError", "VLLMServerError", "InvalidAction", "InvalidGuess", "IllegalMove", "BadToolCall"} <= set(real)


def test_training_and_vllm_server_errors_stop_the_run_and_signals_do_not():
    assert errors.TrainingError.fatal and errors.VLLMServerError.fatal
    assert errors.TrainingError("nan").kind == "training"
    for signal in (errors.InvalidGuess, errors.IllegalMove, errors.BadToolCall):
        assert issubclass(signal, ValueError) and not signal.fatal and not errors.passes_through(signal("x"))
    assert errors.passes_through(errors.ModelServerError("500")) and not errors.passes_through(KeyError("x"))


def test_the_signals_stay_importable_where_environments_found_them():
    from lmgym.envs.game import InvalidGuess
    from lmgym.envs.multi_agent import IllegalMove
    from lmgym.envs.tools import BadToolCall

    assert (InvalidGuess, IllegalMove, BadToolCall) == (errors.InvalidGuess, errors.IllegalMove, errors.BadToolCall)


def rejects(code: str) -> str:
    """A tool that refuses its argument with the signal a tool should raise."""
    if code != "ok":
        raise errors.BadToolCall(f"code must be 'ok', got {code!r}")
    return "done"


def plays(move: str) -> str:
    """A tool that raises another environment's signal: the model is told, as for any failing tool."""
    raise errors.IllegalMove(f"{move} is taken")


async def test_signals_raised_in_tools_reach_the_model_and_are_not_rollout_errors():
    env = ToolEnv(eval_dataset=[{"question": "q"}], tools=[rejects, plays], max_turns=3)
    calls = iter([[tool_call("rejects", {"code": "bad"}, "c1"), tool_call("plays", {"move": "5"}, "c2")]])

    def reply(request):
        return {"content": None, "tool_calls": next(calls)} if request["messages"][-1]["role"] == "user" else "over"

    with ScriptedServer(reply=reply) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0])
        await client.aclose()
    assert rollout.error is None and rollout.state["tool_errors"] == 2
    assert [m["content"] for m in rollout.turns[0].env_messages] == [
        "Error: code must be 'ok', got 'bad'", "Error: plays raised IllegalMove: 5 is taken",
    ]


async def test_a_signal_that_escapes_a_hook_is_the_environments_failure():
    class Escapes(ToolEnv):
        async def env_response(self, messages, state):
            raise errors.InvalidGuess("nobody catches this")

    env = Escapes(eval_dataset=[{"question": "q"}], tools=[rejects])
    with ScriptedServer(reply={"content": None, "tool_calls": [tool_call("rejects", {"code": "ok"})]}) as server:
        client = OpenAIClient(server.base_url)
        rollout = await env.rollout(client, "m", env.eval_dataset[0])
        await client.aclose()
    assert rollout.error.kind == "environment"
    assert rollout.error.message == "Escapes.env_response raised InvalidGuess: nobody catches this"


@pytest.mark.parametrize("raised", [errors.IllegalMove("no board"), KeyError("board")])
async def test_a_game_that_cannot_open_is_the_environments_failure(raised):
    import lmgym

    env = lmgym.load_environment("tic-tac-toe", num_examples=1, num_eval_examples=1)

    def new_game(state, example):
        raise raised

    env.new_game = new_game
    rollout = await env.rollout(None, "m", env.eval_dataset[0])
    assert rollout.error.kind == "environment" and rollout.turns == []
    assert rollout.error.message.startswith(f"TicTacToeEnv could not open the game: {type(raised).__name__}")
