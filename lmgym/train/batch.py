"""`Batch`: what crosses from the orchestrator to the trainer, and nothing else.

The token samples (`lmgym.train.tokens`), one advantage per sample as a float32 tensor
(computed as a tensor from the group's rewards and kept one, so the trainer never turns a
list back into a tensor), the step's rubric and generation metrics, and the bookkeeping
the loop needs: which policy version sampled it (staleness), where the data stood after
its examples (resume), and a few rollouts for RUN_DIR/samples.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lmgym.train.tokens import TokenSample


@dataclass
class Batch:
    samples: list[TokenSample]
    advantages: torch.Tensor  # (B,) float32, one per sample; a sequence of numbers is converted
    metrics: dict[str, float] = field(default_factory=dict)
    policy_version: int = 0  # optimiser steps behind the weights that sampled it
    data_position: dict[str, int] | None = None  # DataStream.position after its examples
    records: list[dict[str, Any]] = field(default_factory=list)  # a few rollouts, for samples.jsonl

    def __post_init__(self) -> None:
        self.advantages = torch.as_tensor(self.advantages, dtype=torch.float32)
        if len(self.advantages) != len(self.samples):
            raise ValueError(f"a batch of {len(self.samples)} samples has {len(self.advantages)} advantages")
