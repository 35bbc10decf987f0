"""Distillation by rejection sampling: a teacher's passing rollouts become a student's SFT data.

    lmgym distill --teacher gpt-4.1-mini --env reverse-digits --min-reward 1 -k 4 -n 500 \\
        --student configs/reverse-digits.toml

1. The teacher, behind any OpenAI-compatible API, runs `tries` rollouts of each of `n`
   examples of the environment's *training* split (`env.dataset`) through the eval runner
   (`lmgym.eval.runner.run_eval`), so OUT/teacher is an ordinary eval run directory:
   results.jsonl streams as rollouts finish, `lmgym view/export/audit` read it, and
   running the same command again continues it.
2. Per example, the *distinct* rollouts (by completion) with reward >= `min_reward`, best
   first, at most `max_per_example`, become rows `{"prompt": example prompt,
   "completion": every message after it}` (tool calls and tool results included):
   OUT/sft.jsonl, which `lmgym sft --sft.data` reads, and OUT/sft_dataset
   (`datasets.load_from_disk`). All distinct passing rollouts rather than only the best:
   several correct solutions of one problem teach more than one (rejection-sampling
   fine-tuning, Yuan et al. 2023, arXiv 2308.01825); the cap keeps the easy examples,
   which pass on every try, from crowding out the hard ones.
3. With a student config, the student is evaluated on the environment's *eval* split
   (never the training split the teacher's data came from) through the in-process engine
   and the same loop `lmgym train` evaluates with (`orchestrator.run_groups`, greedy at
   `eval.temperature`), fine-tuned by `lmgym.train.session.sft` on OUT/sft.jsonl
   (OUT/student), and evaluated again.

Torch is imported only by the student step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson

from lmgym import errors
from lmgym.flywheel.traces import NonTextContent, normalise_message
from lmgym.types import Example

TEACHER_DIR = "teacher"
SFT_FILE = "sft.jsonl"
SFT_DATASET = "sft_dataset"
STUDENT_DIR = "student"
SUMMARY_FILE = "distill.json"


def train_examples(env: Any, n: int = -1, seed: int | None = None) -> list[Example]:
    """The first `n` examples of the training split (all when n < 0), shuffled first if `seed`."""
    if env.dataset is None:
        raise errors.UsageError(
            "this environment has no training split (only an eval split); distilling on eval examples would "
            "leak them into the student's training data"
        )
    examples = list(env.dataset)
    if seed is not None:
        random.Random(seed).shuffle(examples)
    return examples if n < 0 else examples[:n]


@dataclass
class Selection:
    """The SFT rows kept from a teacher run, and the counts behind them."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    examples: int = 0
    rollouts: int = 0
    errors: int = 0
    passing: int = 0
    examples_passing: int = 0

    @property
    def scored(self) -> int:
        return self.rollouts - self.errors

    @property
    def acceptance_rate(self) -> float | None:
        """Passing rollouts over scored ones."""
        return self.passing / self.scored if self.scored else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples, "rollouts": self.rollouts, "errors": self.errors, "passing": self.passing,
            "acceptance_rate": self.acceptance_rate, "examples_passing": self.examples_passing, "kept": len(self.rows),
        }


def select_rollouts(
    records: Sequence[Mapping[str, Any]],
    min_reward: float,
    *,
    max_per_example: int = 4,
    teacher: str | None = None,
) -> Selection:
    """SFT rows from rollout records (results.jsonl), as the module docstring says."""
    if max_per_example < 1:
        raise errors.UsageError(f"max_per_example must be at least 1, got {max_per_example}")
    by_example: dict[Any, list[Mapping[str, Any]]] = {}
    for record in records:
        by_example.setdefault(record["example_id"], []).append(record)
    selection = Selection(examples=len(by_example), rollouts=len(records))
    for example_id, group in by_example.items():
        selection.errors += sum(r.get("error") is not None for r in group)
        passing = [r for r in group if r.get("error") is None and r.get("reward") is not None and r["reward"] >= min_reward]
        selection.passing += len(passing)
        selection.examples_passing += bool(passing)
        seen: set[bytes] = set()
        for record in sorted(passing, key=lambda r: (-r["reward"], r["rollout"])):
            try:
                completion = [normalise_message(m) for m in record["completion"]]
            except NonTextContent:
                continue
            key = orjson.dumps(completion, option=orjson.OPT_SORT_KEYS)
            if key in seen:
                continue
            seen.add(key)
            selection.rows.append({
                "prompt": list(record["prompt"]),
                "completion": completion,
                "example_id": str(example_id),
                "rollout": record["rollout"],
                "reward": record["reward"],
                "teacher": teacher,
            })
            if len(seen) == max_per_example:
                break
    return selection


# ------------------------------------------------------------------------------ student


def evaluate_policy(model: Any, tokenizer: Any, env: Any, examples: Sequence[Example], config: Any) -> dict[str, float]:
    """Mean reward and metrics of one rollout per example, as `lmgym train` evaluates."""
    import asyncio

    from lmgym.train.engines.local import LocalEngine
    from lmgym.train.orchestrator import rubric_metrics, run_groups, sampling_args

    client = LocalEngine(model, tokenizer, seed=config.trainer.seed).client
    sampling = sampling_args(config.sampling, config.eval.temperature)
    groups = asyncio.run(run_groups(env, client, examples, 1, sampling))
    return rubric_metrics([group[0] for group in groups])


@dataclass
class StudentResult:
    before: dict[str, float]
    after: dict[str, float]
    sft: dict[str, float]
    model_dir: Path


def distill_student(config: Any, env: Any, eval_examples: Sequence[Example], run_dir: Path) -> StudentResult:
    """Evaluate the student, fine-tune it on `config.sft.data` into `run_dir`, evaluate again."""
    from lmgym.train.models import load_model
    from lmgym.train.run_files import FINAL_MODEL
    from lmgym.train.session import resolve_device, seed_everything, sft

    device = resolve_device(config.trainer.device)
    seed_everything(config.trainer.seed)  # the same initial weights `sft` will start from
    model, tokenizer = load_model(config.model.name, **config.model.load_options())
    before = evaluate_policy(model.to(device), tokenizer, env, eval_examples, config)
    del model
    metrics = sft(config, run_dir)
    model, tokenizer = load_model(str(run_dir / FINAL_MODEL), **config.model.saved_load_options())
    after = evaluate_policy(model.to(device), tokenizer, env, eval_examples, config)
    return StudentResult(before, after, metrics, run_dir / FINAL_MODEL)
