"""An evaluation run as a library object: its examples, summary and metadata on disk.

`lmgym eval` and `lmgym distill` (the teacher's rollouts) both run through `EvalRun`, so
status, timestamps, the resolved pass criterion, the summary and resume behave the same
everywhere; a caller adds only how it shows progress. The caller holds the directory's
lock (`lmgym.rundir.RunLock`).

    metadata.json  {lmgym_version, config, status, started_at, finished_at, wall_time_s,
                    summary, audit_skip, examples, notes?}; status is running | completed |
                    interrupted | failed; `examples` is how many examples the run has, and
                    `notes` says when that is fewer than -n asked for
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import lmgym
from lmgym import errors
from lmgym.clients.base import ModelClient
from lmgym.envs.base import Environment
from lmgym.eval.config import EvalConfig
from lmgym.eval.results import write_metadata
from lmgym.eval.runner import EvalPlan, OnRecord, run_eval
from lmgym.eval.summary import Summary
from lmgym.types import Example


def resolve_pass_criterion(config: EvalConfig, environment: Environment) -> EvalConfig:
    """The settings win, else what the environment declares; stored resolved, so the
    report and the audit read the criterion the run used."""
    metric = config.pass_metric or environment.pass_metric
    threshold = environment.pass_threshold if config.pass_threshold is None else config.pass_threshold
    return config.model_copy(update={"pass_metric": metric, "pass_threshold": threshold})


class EvalRun:
    """One evaluation in `run_dir`: which examples, the summary so far, and its metadata."""

    def __init__(self, environment: Environment, config: EvalConfig, run_dir: Path, examples: Optional[list[Example]] = None):
        self.environment = environment
        self.config = resolve_pass_criterion(config, environment)
        self.run_dir = run_dir
        self.examples = examples if examples is not None else self._eval_examples()
        if not self.examples:
            raise errors.UsageError(f"{config.env} has no examples to run")
        self.summary = Summary(self.config.pass_threshold, self.config.price_input, self.config.price_output,
                               pass_metric=self.config.pass_metric)
        self.metadata: dict[str, Any] = {}
        self.status: Optional[str] = None

    def _eval_examples(self) -> list[Example]:
        return self.environment.get_eval_examples(self.config.num_examples, seed=self.config.seed)

    @property
    def asked(self) -> Optional[int]:
        """How many examples the settings ask for (None: all); more than `len(examples)`
        when the evaluation set has fewer (`-n` counts per environment of a group)."""
        if self.config.num_examples < 0:
            return None
        return self.config.num_examples * len(getattr(self.environment, "envs", None) or [self.environment])

    @property
    def fewer_note(self) -> Optional[str]:
        """`-n 500` on a 100-example evaluation set runs 100: the sentence that says so (None
        when the run has what was asked), so that no rate is computed from 500."""
        if self.asked is None or len(self.examples) >= self.asked:
            return None
        grouped = " (-n counts per environment)" if getattr(self.environment, "envs", None) else ""
        return f"{len(self.examples)} examples, not {self.asked}: the evaluation set has no more{grouped}"

    async def run(
        self,
        client: ModelClient,
        *,
        concurrency: Optional[int] = None,
        on_start: Callable[[EvalPlan], None] | None = None,
        on_record: OnRecord | None = None,
    ) -> Summary:
        """Run every rollout not yet on disk; metadata.json says `running` meanwhile and
        how the run ended afterwards (completed, interrupted by Ctrl-C, or failed)."""
        self._start()
        status = "failed"
        try:
            await run_eval(
                self.environment, client, model=self.config.model, examples=self.examples,
                rollouts_per_example=self.config.rollouts_per_example, concurrency=concurrency or self.config.concurrency,
                run_dir=self.run_dir, sampling_args=self.config.sampling_args, summary=self.summary,
                on_record=on_record, on_start=on_start,
            )
            status = "completed"
        except (asyncio.CancelledError, KeyboardInterrupt):
            status = "interrupted"
            raise
        finally:
            self._finish(status)
        return self.summary

    def _start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metadata = {
            "lmgym_version": lmgym.__version__,
            "config": self.config.model_dump(),
            "status": "running",
            "started_at": datetime.now(timezone.utc).isoformat(),
            "audit_skip": self.environment.audit_skip,
            "examples": len(self.examples),
        }
        if note := self.fewer_note:
            self.metadata["notes"] = [note]
        self._started = time.perf_counter()
        write_metadata(self.run_dir, self.metadata)

    def _finish(self, status: str) -> None:
        self.status = status
        self.metadata.update(
            status=status,
            finished_at=datetime.now(timezone.utc).isoformat(),
            wall_time_s=time.perf_counter() - self._started,
            summary=self.summary.to_dict(),
        )
        write_metadata(self.run_dir, self.metadata)
