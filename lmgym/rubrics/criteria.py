"""`CriteriaRubric`: a model writes each example's grading checklist; a judge checks it.

For tasks without one right answer (writing, advice, explanations), a fixed rubric is
either vague or wrong for most examples. Here a *writer* model reads the task (and the
reference answer when there is one) and drafts a short weighted checklist — "names the
three rivers (2)", "under 100 words (1)" — once per example; a *judge* then marks each
criterion met or not for every rollout, and the reward is the weighted fraction met.

The checklists are stored in `RUN_DIR/criteria.jsonl` (one line per example, keyed by a
hash of its prompt and answer, so environments of a group can share the file) and read
back on `--resume`, so a resumed run grades with the same criteria and does not pay to
write them again. Without a run directory they live only in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import orjson

from lmgym.errors import VerdictError
from lmgym.parsers.parser import Parser
from lmgym.rubrics.judge import JudgeEndpoint, endpoint_of, fill, judge_fields
from lmgym.rubrics.rubric import Rubric
from lmgym.rubrics.verdicts import json_field, parse_json

CRITERIA_FILE = "criteria.jsonl"

WRITER_TEMPLATE = """Write a grading checklist for responses to the task below: at most {max_criteria} short criteria that a good response meets, each checkable with a yes or no by reading the response, each with a weight from 1 (nice to have) to 3 (essential).

Task:
{question}

Reference answer (may be "(none)"):
{answer}

Reply with only a JSON object: {{"criteria": [{{"criterion": "...", "weight": 2}}, ...]}}"""

CHECK_TEMPLATE = """Check a response against each criterion of a checklist.

Task:
{question}

Response:
{response}

Checklist:
{checklist}

Reply with only a JSON object holding true or false for each criterion, in order: {{"met": [...]}}"""


@dataclass(frozen=True)
class Criterion:
    text: str
    weight: float


def parse_criteria(reply: str, max_criteria: int) -> list[Criterion]:
    """The writer's checklist; an empty or malformed one is an error, not a free pass."""
    items = json_field(parse_json(reply), "criteria")
    if not isinstance(items, list) or not items:
        raise VerdictError(f"the criteria writer gave no list of criteria: {str(items)[:120]!r}")
    criteria = []
    for item in items[:max_criteria]:
        text = item.get("criterion") if isinstance(item, dict) else None
        weight = item.get("weight", 1) if isinstance(item, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise VerdictError(f"a criterion has no text: {item!r}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise VerdictError(f"criterion {text!r} has weight {weight!r}, not a positive number")
        criteria.append(Criterion(text.strip(), float(weight)))
    return criteria


def checklist_text(criteria: Sequence[Criterion]) -> str:
    return "\n".join(f"{i}. {c.text}" for i, c in enumerate(criteria, 1))


def weighted_fraction(criteria: Sequence[Criterion], met: Any) -> float:
    if not isinstance(met, list) or len(met) != len(criteria) or not all(isinstance(m, bool) for m in met):
        raise VerdictError(f"the judge's 'met' is {met!r}, not {len(criteria)} true/false values")
    return sum(c.weight for c, m in zip(criteria, met) if m) / sum(c.weight for c in criteria)


def example_key(prompt: Any, answer: Any) -> str:
    return hashlib.sha256(orjson.dumps([prompt, answer], option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]


class CriteriaStore:
    """Checklists by example key, appended to a JSONL file when one is attached."""

    def __init__(self) -> None:
        self.checklists: dict[str, list[Criterion]] = {}
        self.path: Path | None = None

    def attach(self, path: Path) -> None:
        self.path = path
        if path.exists():
            for line in path.read_bytes().splitlines():
                try:
                    record = orjson.loads(line)
                    self.checklists[record["key"]] = [Criterion(c["criterion"], c["weight"]) for c in record["criteria"]]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line: that example's checklist is written again

    def add(self, key: str, example_id: Any, criteria: list[Criterion]) -> None:
        if key in self.checklists:
            return
        self.checklists[key] = criteria
        if self.path is not None:
            record = {"key": key, "example_id": example_id, "criteria": [{"criterion": c.text, "weight": c.weight} for c in criteria]}
            with self.path.open("ab") as file:
                file.write(orjson.dumps(record, default=str) + b"\n")


class CriteriaRubric(Rubric):
    """Reward = weighted fraction of the example's generated criteria that a judge finds met."""

    def __init__(
        self,
        writer: str | JudgeEndpoint,
        judge: str | JudgeEndpoint | None = None,
        *,
        max_criteria: int = 6,
        funcs: Sequence[Callable[..., Any]] = (),
        weights: Sequence[float] | None = None,
        criteria_weight: float = 1.0,
        parser: Parser | None = None,
        **endpoint: Any,
    ):
        """`endpoint` (base_url, api_key_var, sampling, ...) configures a writer or judge given by name."""
        super().__init__(parser=parser)
        self.writer = endpoint_of(writer, **endpoint)
        self.judge = endpoint_of(judge, **endpoint) if judge is not None else self.writer
        self.max_criteria = max_criteria
        self.store = CriteriaStore()

        async def criteria_met(**kwargs: Any) -> float:
            criteria = await self.criteria_for(kwargs)
            fields = {**judge_fields(kwargs), "checklist": checklist_text(criteria)}
            reply = await self.judge.ask(fill(CHECK_TEMPLATE, fields))
            return weighted_fraction(criteria, json_field(parse_json(reply), "met"))

        self.add(criteria_met, criteria_weight).extend(funcs, weights)

    def use_run_dir(self, run_dir: Path) -> None:
        self.store.attach(run_dir / CRITERIA_FILE)

    async def criteria_for(self, kwargs: dict[str, Any]) -> list[Criterion]:
        """The example's checklist: from the store, or written now (once for all its rollouts)."""
        key = example_key(kwargs.get("prompt"), kwargs.get("answer"))
        if key not in self.store.checklists:
            fields = {**judge_fields(kwargs), "max_criteria": self.max_criteria}
            reply = await self.writer.ask(fill(WRITER_TEMPLATE, fields))
            self.store.add(key, kwargs.get("example_id"), parse_criteria(reply, self.max_criteria))
        return self.store.checklists[key]
