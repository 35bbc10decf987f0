"""Move stock between two warehouses: read both counts, write both, then say done.

A multi-turn tool task for training: the counts are not in the prompt, so an episode
needs at least four tool calls (`check_stock` twice, `set_stock` twice) before the final
reply, and it is graded on the warehouses' final state, not on any text. Each rollout
gets its own stock (a hidden tool argument the model never sees or forges).

`sft_examples` writes episodes from a noisy teacher for the warm start of training
(`configs/stockroom-tools.toml`): some skip reading the destination and guess its count,
some slip by one in the arithmetic, so supervised learning alone stays short of perfect.
"""

from __future__ import annotations

import json
import random
from typing import Any

from datasets import Dataset

from lmgym import Rubric, XMLParser
from lmgym.envs import StatefulToolEnv, train_and_eval
from lmgym.types import Example

SYSTEM_PROMPT = (
    "You manage two warehouses, north and south. Use check_stock to read a count and "
    "set_stock to write one. When the move is done, reply with <answer>done</answer>."
)
ITEMS = (
    "apples", "bolts", "cables", "chairs", "drills", "fans", "gloves", "hammers", "helmets", "lamps",
    "nails", "pipes", "ropes", "screws", "shovels", "tapes", "tiles", "valves", "wheels", "wires",
)
WAREHOUSES = ("north", "south")


def make_task(rng: random.Random, _index: int) -> dict[str, Any]:
    """One move: `amount` units of `item` from `source` to `target`, with starting counts."""
    item = rng.choice(ITEMS)
    source, target = rng.sample(WAREHOUSES, 2)
    amount = rng.randint(1, 9)
    return {
        "question": f"Move {amount} {item} from the {source} warehouse to the {target} warehouse.",
        "item": item, "source": source, "target": target, "amount": amount,
        "source_count": rng.randint(10, 60), "target_count": rng.randint(10, 60),
    }


def starting_stock(info: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {info["source"]: {info["item"]: info["source_count"]}, info["target"]: {info["item"]: info["target_count"]}}


def expected_stock(info: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        info["source"]: {info["item"]: info["source_count"] - info["amount"]},
        info["target"]: {info["item"]: info["target_count"] + info["amount"]},
    }


def _shelf(stock: dict[str, dict[str, int]], warehouse: str, item: str) -> dict[str, int]:
    if warehouse not in stock:
        raise ValueError(f"no warehouse named {warehouse!r}; there are {' and '.join(WAREHOUSES)}")
    if item not in stock[warehouse]:
        raise ValueError(f"{warehouse} does not stock {item!r}")
    return stock[warehouse]


def check_stock(warehouse: str, item: str, stock: dict) -> str:
    """Read how many units of an item a warehouse holds.

    Args:
        warehouse: north or south.
        item: the item's name, e.g. "bolts".
    """
    return str(_shelf(stock, warehouse, item)[item])


def set_stock(warehouse: str, item: str, count: int, stock: dict) -> str:
    """Write how many units of an item a warehouse holds.

    Args:
        warehouse: north or south.
        item: the item's name, e.g. "bolts".
        count: the new number of units (0 or more).
    """
    if count < 0:
        raise ValueError(f"count cannot be negative, got {count}")
    _shelf(stock, warehouse, item)[item] = count
    return f"{warehouse} now holds {count} {item}"


def stock_correct(state, info) -> float:
    """1.0 when both warehouses hold exactly the counts the move should leave."""
    return float(state["stock"] == expected_stock(info))


class StockroomEnv(StatefulToolEnv):
    """A StatefulToolEnv whose rollouts each start from the example's own stock."""

    async def setup_state(self, state: dict[str, Any], example: Example) -> None:
        await super().setup_state(state, example)
        state["stock"] = starting_stock(example.info)


def _call(index: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"call{index:05d}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def teacher_episode(row: dict[str, Any], rng: random.Random, skip: float, slip: float) -> list[dict[str, Any]]:
    """The assistant's side of one episode: read the source (and, unless it skips, the
    target), write both, say done. Skipping guesses the target's count; a slip is off by one."""
    item, source, target, amount = row["item"], row["source"], row["target"], row["amount"]
    stock = starting_stock(row)
    target_seen = rng.randint(10, 60) if rng.random() < skip else None
    error = rng.choice((-1, 1)) if rng.random() < slip else 0
    steps: list[tuple[str, dict[str, Any]]] = [("check_stock", {"warehouse": source, "item": item})]
    if target_seen is None:
        steps.append(("check_stock", {"warehouse": target, "item": item}))
        target_seen = row["target_count"]
    steps += [
        ("set_stock", {"warehouse": source, "item": item, "count": row["source_count"] - amount + error}),
        ("set_stock", {"warehouse": target, "item": item, "count": target_seen + amount}),
    ]
    messages: list[dict[str, Any]] = []
    for index, (name, arguments) in enumerate(steps, start=1):
        call = _call(index, name, arguments)
        result = check_stock(**arguments, stock=stock) if name == "check_stock" else set_stock(**arguments, stock=stock)
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": result},
        ]
    return [*messages, {"role": "assistant", "content": "<answer>done</answer>"}]


def sft_examples(num_examples: int = 1000, skip: float = 0.3, slip: float = 0.2, seed: int = 0, examples_seed: int = 0) -> list[dict]:
    """Warm-start rows `{"prompt", "completion"}` on training-split tasks."""
    for name, share in (("skip", skip), ("slip", slip)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {share}")
    rng = random.Random(f"{seed}/sft")
    rows, _ = train_and_eval(make_task, num_examples, 0, examples_seed)
    return [
        {
            "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["question"]}],
            "completion": teacher_episode(row, rng, skip, slip),
        }
        for row in rows
    ]


def load_environment(
    num_examples: int = 200, num_eval_examples: int = 100, max_turns: int = 8, seed: int = 0,
    sft_skip: float = 0.3, sft_slip: float = 0.2,
) -> StockroomEnv:
    """`sft_skip` and `sft_slip`: the noisy teacher's shares of guessed destination counts
    and off-by-one writes in `sft_examples` (the warm start of training)."""
    train, evals = train_and_eval(make_task, num_examples, num_eval_examples, seed)
    parser = XMLParser(["answer"])
    rubric = Rubric([stock_correct, parser.get_format_reward_func()], weights=[1.0, 0.1], parser=parser)
    return StockroomEnv(
        Dataset.from_list(train),
        Dataset.from_list(evals) if evals else None,
        tools=[check_stock, set_stock],
        hidden_args=["stock"],
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 128},
        sft_examples=lambda seed=0, num_examples=1000: sft_examples(num_examples, sft_skip, sft_slip, seed, seed),
        audit_skip={"reward_without_answer": "graded on the warehouses' final stock, not on the text of a reply"},
    )
