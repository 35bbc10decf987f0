"""Procedurally generated multi-step word problems with exact numeric answers, checked with math-verify.

Each problem comes from one of several two- or three-step templates (change after
shopping, distance over two legs, sharing equally, ages, cutting a ribbon, discounts,
filling a tank), drawn with `random.Random(seed)` (the eval split from a seed derived
from it). Answers are exact: integers, terminating decimals ("2.5") or fractions
("7/3"); `MathRubric` accepts any equal form ("5/2", "\\frac{5}{2}", "\\boxed{2.5}"),
comparing in worker processes under a time limit.
A problem's split is fixed by a hash of its text, so train and eval never overlap.
"""

from __future__ import annotations

import random
from decimal import Decimal
from fractions import Fraction
from typing import Callable

from datasets import Dataset

from lmgym import SingleTurnEnv, XMLParser
from lmgym.envs import train_and_eval
from lmgym.rubrics import MathRubric

SYSTEM_PROMPT = (
    "Solve the word problem. Reply with only the final number inside answer tags, for "
    "example: <answer>12</answer>. Write a fraction like 7/3 when the answer is not whole."
)
NAMES = "Ava Ben Chloe Dev Emma Farid Grace Hugo Ines Jonas Kemi Liam Maya Noah Omar Priya".split()


def exact(value: Fraction) -> str:
    """An integer, a terminating decimal, or else a fraction a/b."""
    if value.denominator == 1:
        return str(value.numerator)
    rest = value.denominator
    for p in (2, 5):
        while rest % p == 0:
            rest //= p
    if rest == 1:
        return str(Decimal(value.numerator) / Decimal(value.denominator))
    return f"{value.numerator}/{value.denominator}"


def shopping(r: random.Random, name: str) -> tuple[str, Fraction]:
    a, p, b, q = r.randint(2, 6), r.randint(2, 9), r.randint(2, 6), r.randint(1, 5)
    total = a * p + b * q
    bill = next(v for v in (20, 50, 100) if v > total)
    return (f"{name} buys {a} notebooks at ${p} each and {b} pens at ${q} each, and pays with a "
            f"${bill} bill. How many dollars of change does {name} get?"), Fraction(bill - total)


def travel(r: random.Random, name: str) -> tuple[str, Fraction]:
    s1, h1, s2, h2 = r.randint(4, 12) * 5, r.randint(1, 5), r.randint(4, 12) * 5, r.randint(1, 5)
    return (f"{name} drives at {s1} km per hour for {h1} hours, then at {s2} km per hour for "
            f"{h2} hours. How many kilometres does {name} drive in total?"), Fraction(s1 * h1 + s2 * h2)


def sharing(r: random.Random, name: str) -> tuple[str, Fraction]:
    boxes, per_box, friends = r.randint(2, 8), r.randint(6, 12), r.randint(2, 6)
    eaten = (boxes * per_box) % friends or friends  # what is left divides exactly
    return (f"{name} has {boxes} boxes with {per_box} cookies in each box. {name} eats {eaten} "
            f"cookies and shares the rest equally among {friends} friends. How many cookies does "
            f"each friend get?"), Fraction(boxes * per_box - eaten, friends)


def ages(r: random.Random, name: str) -> tuple[str, Fraction]:
    other = r.choice([n for n in NAMES if n != name])
    age, older, later = r.randint(3, 15), r.randint(1, 9), r.randint(2, 10)
    return (f"{name} is {age} years old. {other} is {older} years older than twice {name}'s age. "
            f"What will the sum of their ages be in {later} years?"), Fraction(3 * age + older + 2 * later)


def ribbon(r: random.Random, name: str) -> tuple[str, Fraction]:
    length, pieces = r.randint(2, 20), r.randint(2, 8)
    used = r.randint(1, pieces - 1)
    return (f"A ribbon is {length} metres long. {name} cuts it into {pieces} equal pieces and uses "
            f"{used} of them. How many metres of ribbon does {name} use?"), Fraction(length * used, pieces)


def discount(r: random.Random, name: str) -> tuple[str, Fraction]:
    price, off, count = r.randint(4, 40) * 5, r.choice([10, 20, 25, 30, 50]), r.randint(2, 4)
    return (f"A jacket costs ${price}. It is on sale for {off}% off, and {name} buys {count} of "
            f"them. How many dollars does {name} pay?"), Fraction(price * (100 - off) * count, 100)


def tank(r: random.Random, name: str) -> tuple[str, Fraction]:
    capacity, rate = r.randint(10, 60) * 10, r.randint(3, 12)
    filled = r.randint(1, capacity // 20) * 10
    return (f"A tank holds {capacity} litres and already has {filled} litres in it. {name}'s pump "
            f"adds {rate} litres per minute. How many minutes does it take to fill the tank?"),\
        Fraction(capacity - filled, rate)


TEMPLATES: tuple[Callable[[random.Random, str], tuple[str, Fraction]], ...] = (
    shopping, travel, sharing, ages, ribbon, discount, tank,
)


def make_problem(rng: random.Random, index: int) -> dict:
    """The next problem, cycling through the templates."""
    template = TEMPLATES[index % len(TEMPLATES)]
    question, value = template(rng, rng.choice(NAMES))
    return {"question": question, "answer": exact(value), "template": template.__name__}


def load_environment(num_examples: int = 200, num_eval_examples: int = 100, seed: int = 0) -> SingleTurnEnv:
    train, evals = train_and_eval(make_problem, num_examples, num_eval_examples, seed)
    parser = XMLParser(["answer"])
    rubric = MathRubric(parser, funcs=[parser.get_format_reward_func()], weights=[0.2])
    return SingleTurnEnv(
        Dataset.from_list(train),
        Dataset.from_list(evals) if evals else None,
        system_prompt=SYSTEM_PROMPT,
        parser=parser,
        rubric=rubric,
        sampling_args={"temperature": 0.7, "max_tokens": 128},
    )
