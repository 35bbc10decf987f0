"""Multi-digit arithmetic with a calculator tool: the model calls `calculate`, then answers.

The products and sums are too large to do reliably in one's head, so the tool is the
way to the reward. The calculator evaluates + - * / ** and parentheses over numbers
through Python's parser, never `eval`, and refuses anything else.

`sft_examples` writes tool-call episodes from a noisy teacher for the warm start of
training (`configs/calculator-tools.toml`): some answers are guessed without the tool,
some calls mistype the expression, so supervised learning alone stays well short of
perfect and reinforcement learning has something to find.
"""

from __future__ import annotations

import ast
import json
import operator
import random

from datasets import Dataset

from lmgym import Rubric, XMLParser
from lmgym.envs import ToolEnv, train_and_eval

SYSTEM_PROMPT = (
    "Use the calculate tool for any arithmetic. When you know the result, reply with only "
    "the number inside answer tags, for example: <answer>42</answer>"
)
OPERATIONS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv, ast.Pow: operator.pow}


def _value(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return -_value(node.operand) if isinstance(node.op, ast.USub) else _value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATIONS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return OPERATIONS[type(node.op)](left, right)
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: numbers with + - * / ** and parentheses, e.g. "(12 + 3) * 4".
    """
    value = _value(ast.parse(expression, mode="eval").body)
    return str(int(value)) if float(value).is_integer() else repr(value)


def correct_answer(completion, answer: str, parser) -> float:
    given = parser.parse_answer(completion)
    return 1.0 if given is not None and given.replace(",", "").strip() == answer else 0.0


KINDS = ("product-sum", "product")


def question_maker(kind: str):
    """`product-sum`: a * b + c with a, b of 3-4 digits; `product`: a 3-digit times a 4-digit number."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")

    def make(rng: random.Random, _index: int) -> dict:
        if kind == "product":
            a, b = rng.randint(100, 999), rng.randint(1000, 9999)
            return {"question": f"What is {a} * {b}?", "answer": str(a * b), "expression": f"{a} * {b}"}
        a, b, c = rng.randint(100, 9999), rng.randint(100, 9999), rng.randint(10, 999)
        return {"question": f"What is {a} * {b} + {c}?", "answer": str(a * b + c), "expression": f"{a} * {b} + {c}"}

    return make


def typo(text: str, rng: random.Random) -> str:
    """`text` with one digit changed (never to a leading zero)."""
    positions = [i for i, ch in enumerate(text) if ch.isdigit()]
    i = rng.choice(positions)
    leading = i == 0 or not text[i - 1].isdigit()
    return text[:i] + rng.choice([d for d in "0123456789" if d != text[i] and not (leading and d == "0")]) + text[i + 1:]


def teacher_episode(row: dict, rng: random.Random, guess: float, mistype: float) -> list[dict]:
    """The assistant's side of one episode: a guess without the tool (`guess` of the time),
    a call with a mistyped expression (`mistype`), or a correct call; then the answer."""
    if rng.random() < guess:
        return [{"role": "assistant", "content": f"<answer>{typo(row['answer'], rng)}</answer>"}]
    expression = typo(row["expression"], rng) if rng.random() < mistype else row["expression"]
    call = {"id": "call00001", "type": "function", "function": {"name": "calculate", "arguments": json.dumps({"expression": expression})}}
    result = calculate(expression)
    return [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call00001", "content": result},
        {"role": "assistant", "content": f"<answer>{result}</answer>"},
    ]


def sft_examples(
    num_examples: int = 1000, guess: float = 0.3, mistype: float = 0.3, seed: int = 0, examples_seed: int = 0,
    kind: str = "product-sum",
) -> list[dict]:
    """Warm-start rows `{"prompt", "completion"}` on training-split questions."""
    for name, share in (("guess", guess), ("mistype", mistype)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {share}")
    rng = random.Random(f"{seed}/sft")
    rows, _ = train_and_eval(question_maker(kind), num_examples, 0, examples_seed)
    return [
        {
            "prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["question"]}],
            "completion": teacher_episode(row, rng, guess, mistype),
        }
        for row in rows
    ]


def load_environment(
    num_examples: int = 200, num_eval_examples: int = 100, max_turns: int = 4, seed: int = 0,
    kind: str = "product-sum", sft_guess: float = 0.3, sft_mistype: float = 0.3,
) -> ToolEnv:
    """`kind`: the questions (`question_maker`). `sft_guess` and `sft_mistype`: the noisy
    teacher's shares of guessed answers and mistyped calls in `sft_examples` (the warm
    start of training)."""
    train, evals = train_and_eval(question_maker(kind), num_examples, num_eval_examples, seed)
    parser = XMLParser(["answer"])
    rubric = Rubric([correct_answer, parser.get_format_reward_func()], weights=[1.0, 0.2], parser=parser)
    return ToolEnv(
        Dataset.from_list(train),
        Dataset.from_list(evals) if evals else None,
        tools=[calculate],
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        max_turns=max_turns,
        sampling_args={"temperature": 0.7, "max_tokens": 128},
        sft_examples=lambda seed=0, num_examples=1000: sft_examples(num_examples, sft_guess, sft_mistype, seed, seed, kind),
    )
