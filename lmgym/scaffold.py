"""`lmgym init`: the files of a new environment package, written from string templates.

    NAME/
      pyproject.toml         the `lmgym.environments` entry point: `pip install -e` registers it
      MODULE.py              load_environment(): a generated dataset, a parser, a rubric
      README.md              what to edit, how to run and test it
      tests/test_MODULE.py   every eval example end to end against lmgym.testing.ScriptedServer

MODULE is NAME with `_` for `-`. Three kinds differ only in MODULE.py, the scripted
model of the test, and a README paragraph: `single-turn` (add two numbers), `multi-turn`
(guess a number, with higher/lower feedback) and `tool` (look stock up with a tool).

The templates are `string.Template`s in this module rather than files, so they ship with
the package without package data, and `$` substitution leaves the braces of the Python
and TOML they hold alone. Every kind has the rewards `correct_answer` (weight 1.0) and
`format_reward` (weight 0.2), so a solved example earns 1.2.
"""

from __future__ import annotations

import importlib.util
import keyword
import re
from pathlib import Path
from string import Template

from lmgym import errors
from lmgym.registry import available_environments

KINDS = ("single-turn", "multi-turn", "tool")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")

PYPROJECT = Template('''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "lmgym-env-$name"
version = "0.1.0"
description = "$description"
requires-python = ">=3.11"
dependencies = ["lmgym"]

# `lmgym eval $name` finds the environment through this entry point once installed.
[project.entry-points."lmgym.environments"]
$name = "$module:load_environment"

[tool.setuptools]
py-modules = ["$module"]

# lets tests/ import $module without installing it
[tool.pytest.ini_options]
pythonpath = ["."]
asyncio_default_fixture_loop_scope = "function"
''')

SINGLE_TURN = Template('''\
"""$description.

Single-turn: one question, one reply, then the rubric. To make it yours, replace
`make_row` with your data (or pass a `datasets.Dataset` with `question` and `answer`
columns), `correct_answer` with your check, and SYSTEM_PROMPT.
"""

from __future__ import annotations

import random

from lmgym import Rubric, SingleTurnEnv, XMLParser

SYSTEM_PROMPT = "Add the two numbers. Reply with only the sum inside answer tags, e.g. <answer>42</answer>"


def make_row(rng: random.Random) -> dict:
    """One dataset row: the `question` the model sees and the `answer` rewards check."""
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return {"question": f"What is {a} + {b}?", "answer": str(a + b)}


def correct_answer(completion, answer: str, parser) -> float:
    """1.0 when the answer tags hold exactly the right number."""
    return 1.0 if parser.parse_answer(completion) == answer else 0.0


def load_environment(num_examples: int = 100, num_eval_examples: int = 20, seed: int = 0) -> SingleTurnEnv:
    """Arguments are options: `lmgym eval $name -a '{"seed": 1}'`."""
    rng = random.Random(seed)
    # toy splits may share a question; lmgym.envs.procedural.train_and_eval keeps them apart
    train = [make_row(rng) for _ in range(num_examples)]
    evals = [make_row(rng) for _ in range(num_eval_examples)]
    parser = XMLParser(["answer"])
    rubric = Rubric([correct_answer, parser.get_format_reward_func()], weights=[1.0, 0.2], parser=parser)
    return SingleTurnEnv(
        train,
        evals,
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        sampling_args={"temperature": 0.7, "max_tokens": 64},
    )
''')

MULTI_TURN = Template('''\
"""$description.

Multi-turn: after each guess `env_response` answers "Higher." or "Lower.", and `is_done`
ends the episode once the number is found (or after `max_turns` guesses). To make it
yours, change `setup_state` (per-episode state), `env_response`, `is_done` and the rewards.
"""

from __future__ import annotations

import random
from typing import Any

from lmgym import MultiTurnEnv, Rubric, XMLParser

SYSTEM_PROMPT = "Find the secret number. Reply with only your guess inside guess tags, e.g. <guess>7</guess>"


def make_row(rng: random.Random, highest: int) -> dict:
    """One dataset row: the opening `question` and the secret number as `answer`."""
    secret = rng.randint(1, highest)
    return {"question": f"I am thinking of a number from 1 to {highest}. Guess it.", "answer": str(secret)}


def correct_answer(state) -> float:
    """1.0 when the model found the number within the turn budget."""
    return 1.0 if state.get("solved") else 0.0


class GuessNumberEnv(MultiTurnEnv):
    async def setup_state(self, state: dict[str, Any], example) -> None:
        state["secret"] = int(example.answer)

    async def env_response(self, messages, state: dict[str, Any]):
        """Feedback on the latest guess, as a user message."""
        guess = self.parser.parse_answer(messages)
        if guess is None or not guess.isdigit():
            return [{"role": "user", "content": "Reply with a whole number inside guess tags."}]
        if int(guess) == state["secret"]:
            state["solved"] = True
            return [{"role": "user", "content": "Correct!"}]
        return [{"role": "user", "content": "Higher." if int(guess) < state["secret"] else "Lower."}]

    async def is_done(self, messages, state: dict[str, Any]) -> bool:
        return state.get("solved", False)


def load_environment(
    num_examples: int = 100, num_eval_examples: int = 20, highest: int = 10, max_turns: int = 10, seed: int = 0
) -> GuessNumberEnv:
    """Arguments are options: `lmgym eval $name -a '{"highest": 100}'`."""
    rng = random.Random(seed)
    train = [make_row(rng, highest) for _ in range(num_examples)]
    evals = [make_row(rng, highest) for _ in range(num_eval_examples)]
    parser = XMLParser(["guess"], answer_field="guess")
    rubric = Rubric([correct_answer, parser.get_format_reward_func()], weights=[1.0, 0.2], parser=parser)
    return GuessNumberEnv(
        train,
        evals,
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 32},
    )
''')

TOOL = Template('''\
"""$description.

Tools: plain Python functions the model calls. It sees each one's name, docstring
(`Args:` describe the arguments) and type hints; what the function returns, or the error
it raises, comes back as a tool message. To make it yours, replace `stock` with your
tools (pass them in `tools=[...]`) and the questions with ones that need them.
"""

from __future__ import annotations

import itertools
import random

from lmgym import Rubric, ToolEnv, XMLParser

SYSTEM_PROMPT = (
    "Look items up with the stock tool. When you know the result, reply with only the "
    "number inside answer tags, e.g. <answer>42</answer>"
)
ITEMS = ["apples", "pears", "plums", "lemons", "figs", "dates", "limes", "kiwis"]


def correct_answer(completion, answer: str, parser) -> float:
    """1.0 when the final answer tags hold exactly the right number."""
    return 1.0 if parser.parse_answer(completion) == answer else 0.0


def load_environment(num_eval_examples: int = 8, max_turns: int = 4, seed: int = 0) -> ToolEnv:
    """Arguments are options: `lmgym eval $name -a '{"seed": 1}'`."""
    rng = random.Random(seed)
    inventory = {item: rng.randint(0, 500) for item in ITEMS}

    def stock(item: str) -> int:
        """Count the units of an item in the warehouse.

        Args:
            item: the item's name, plural and lower case, e.g. "apples".
        """
        return inventory[item]  # an unknown item raises KeyError, which the model is shown

    pairs = list(itertools.combinations(ITEMS, 2))
    rng.shuffle(pairs)
    rows = [
        {"question": f"How many {a} and {b} are in stock together?", "answer": str(inventory[a] + inventory[b])}
        for a, b in pairs
    ]
    parser = XMLParser(["answer"])
    rubric = Rubric([correct_answer, parser.get_format_reward_func()], weights=[1.0, 0.2], parser=parser)
    return ToolEnv(
        rows[num_eval_examples:],
        rows[:num_eval_examples],
        tools=[stock],
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 128},
    )
''')

# The scripted model of each kind's test: `solve` answers right, WRONG never does; and
# what the test imports for it (standard library, then from lmgym.testing).
TEST_IMPORTS = {
    "single-turn": ("import asyncio\nimport re\n", "ScriptedServer, last_user_text"),
    "multi-turn": ("import asyncio\n", "ScriptedServer"),
    "tool": ("import asyncio\nimport re\n", "ScriptedServer, last_user_text, tool_call"),
}
SOLVERS = {
    "single-turn": '''\
WRONG = "<answer>-1</answer>"


def solve(request) -> str:
    """The right sum, read off the question."""
    a, b = map(int, re.findall(r"\\d+", last_user_text(request)))
    return f"<answer>{a + b}</answer>"
''',
    "multi-turn": '''\
WRONG = "<guess>0</guess>"


def solve(request) -> str:
    """Guess 1, 2, 3, ...: one more than the guesses made so far (enough within max_turns)."""
    guesses = sum(m["role"] == "assistant" for m in request["messages"])
    return f"<guess>{guesses + 1}</guess>"
''',
    "tool": '''\
WRONG = "<answer>-1</answer>"


def solve(request):
    """First look both items up in one turn, then answer with the sum of the results."""
    results = [m["content"] for m in request["messages"] if m["role"] == "tool"]
    if results:
        return f"<answer>{sum(map(int, results))}</answer>"
    a, b = re.search(r"How many (\\w+) and (\\w+)", last_user_text(request)).groups()
    calls = [tool_call("stock", {"item": a}, "call_0"), tool_call("stock", {"item": b}, "call_1")]
    return {"content": None, "tool_calls": calls}
''',
}

TEST = Template('''\
"""$name end to end: the real HTTP client and rollout loop against a scripted model.

`ScriptedServer` is an OpenAI-compatible server on loopback whose `reply` function plays
the model, so answers are deterministic. Run with `pytest $path`.
"""

from __future__ import annotations

$imports
import pytest

from lmgym import OpenAIClient
from lmgym.testing import $testing

from $module import load_environment

$solver

async def run_eval_examples(base_url: str):
    """One scored rollout of every eval example."""
    env = load_environment()
    client = OpenAIClient(base_url, "test-key", max_retries=0)
    try:
        rollouts = await asyncio.gather(*(env.rollout(client, "scripted", ex) for ex in env.get_eval_examples()))
    finally:
        await client.aclose()
    for rollout in rollouts:
        await env.score_group([rollout])
    return rollouts


def test_right_answers_get_full_reward():
    with ScriptedServer(reply=solve) as server:
        rollouts = asyncio.run(run_eval_examples(server.base_url))
    assert rollouts
    for rollout in rollouts:
        assert rollout.error is None, rollout.error
        assert rollout.metrics["correct_answer"] == 1.0
        assert rollout.metrics["format_reward"] == 1.0
        assert rollout.reward == pytest.approx(1.2)


def test_wrong_answers_get_no_correctness_reward():
    with ScriptedServer(reply=WRONG) as server:
        rollouts = asyncio.run(run_eval_examples(server.base_url))
    assert all(r.error is None and r.metrics["correct_answer"] == 0.0 for r in rollouts)
''')

EDITS = {
    "single-turn": "Replace `make_row` (or pass a `datasets.Dataset` with `question` and `answer` columns), "
    "`correct_answer` and `SYSTEM_PROMPT`.",
    "multi-turn": "Change `setup_state` (what an episode starts with), `env_response` (what the environment "
    "says after each reply), `is_done` (when the episode ends) and the rewards, which can read `state`.",
    "tool": "Replace `stock` with your own functions and list them in `tools=[...]`; the docstring and "
    "type hints are what the model sees. Then write questions that need them.",
}
DESCRIPTIONS = {
    "single-turn": "Add two numbers; the answer goes in <answer> tags",
    "multi-turn": "Guess a secret number from higher/lower feedback, over several turns",
    "tool": "Answer stock questions by calling a `stock` lookup tool",
}

README = Template('''\
# $name

$description. Scaffolded by `lmgym init $name --kind $kind`; a working example to edit.

## Files

- `$module.py`: `load_environment()` builds the dataset, the parser (`XMLParser`), the
  rubric (`correct_answer` weighted 1.0, `format_reward` 0.2) and the environment. Its
  arguments are the environment's options (`lmgym eval $name -a '{...}'`).
- `tests/test_$module.py`: runs every eval example against a scripted model.
- `pyproject.toml`: registers `$name` in the entry-point group `lmgym.environments`.

## What to edit

$edits Keep the module docstring's first line short: `lmgym list` shows it.

## Run it

    pip install -e $path
    lmgym eval $name                                      # the embedded local model
    lmgym eval $name -m MODEL -b http://localhost:8000/v1 -n 20 -r 3

Before installing, `lmgym eval $name` also finds it in `environments/$name/` under the
current directory. Results go to `runs/eval/...`; `lmgym export RUN_DIR` makes a dataset.

## Test it

    pytest $path

`lmgym.testing.ScriptedServer` is an OpenAI-compatible server on loopback whose `reply`
function plays the model: the real HTTP client and rollout loop run with deterministic
answers. Give it a `reply` for each behaviour to pin down: a right answer, a wrong one, a
malformed one (`server.fail_next(500)` injects HTTP errors too).
''')


def module_name(name: str) -> str:
    return name.replace("-", "_")


def check_name(name: str) -> None:
    """Refuse names that cannot be an environment, or that one already uses.

    An existing environment or importable module of the same name is refused rather than
    warned about: `lmgym eval NAME` would silently load one of the two."""
    if not NAME_PATTERN.fullmatch(name):
        raise errors.UsageError(
            f"invalid environment name {name!r}: use lower-case letters, digits, and single - or _ "
            "between them, starting with a letter (e.g. my-env)"
        )
    module = module_name(name)
    if keyword.iskeyword(module):
        raise errors.UsageError(f"invalid environment name {name!r}: {module!r} is a Python keyword")
    existing = available_environments().get(name.replace("_", "-"))
    if existing is not None:
        raise errors.UsageError(
            f"an environment named {existing.name!r} already exists ({existing.source}); "
            f"pick another name so that `lmgym eval {existing.name}` stays unambiguous"
        )
    spec = importlib.util.find_spec(module)
    if spec is not None:
        raise errors.UsageError(
            f"a Python module named {module!r} already exists ({spec.origin}); "
            "pick another name so that the environment's module does not shadow it"
        )


def render(name: str, kind: str, path: str) -> dict[str, str]:
    """The package's files, by path relative to its directory; `path` is how the README
    and the test refer to that directory."""
    if kind not in KINDS:
        raise errors.UsageError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    module = module_name(name)
    values = {
        "name": name, "module": module, "kind": kind, "path": path,
        "description": DESCRIPTIONS[kind], "edits": EDITS[kind], "solver": SOLVERS[kind],
        "imports": TEST_IMPORTS[kind][0], "testing": TEST_IMPORTS[kind][1],
    }
    code = {"single-turn": SINGLE_TURN, "multi-turn": MULTI_TURN, "tool": TOOL}[kind]
    return {
        "pyproject.toml": PYPROJECT.substitute(values),
        f"{module}.py": code.substitute(values),
        "README.md": README.substitute(values),
        f"tests/test_{module}.py": TEST.substitute(values),
    }


def write_package(name: str, kind: str, directory: Path) -> list[Path]:
    """Write the package into `directory`, which must be new or empty, once the name is checked."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise errors.UsageError(f"{directory} already exists and is not empty; choose another --dir or remove it")
    check_name(name)
    files = render(name, kind, directory.as_posix())
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
