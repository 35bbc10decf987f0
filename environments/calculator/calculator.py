"""Multi-digit arithmetic with a calculator tool: the model calls `calculate`, then answers.

The products and sums are too large to do reliably in one's head, so the tool is the
way to the reward. The calculator evaluates + - * / ** and parentheses over numbers
through Python's parser, never `eval`, and refuses anything else.
"""

from __future__ import annotations

import ast
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


def load_environment(num_examples: int = 200, num_eval_examples: int = 100, max_turns: int = 4, seed: int = 0) -> ToolEnv:
    def make(rng: random.Random, _index: int) -> dict:
        a, b, c = rng.randint(100, 9999), rng.randint(100, 9999), rng.randint(10, 999)
        return {"question": f"What is {a} * {b} + {c}?", "answer": str(a * b + c)}

    train, evals = train_and_eval(make, num_examples, num_eval_examples, seed)
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
    )
