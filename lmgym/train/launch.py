"""What `lmgym train --nproc N` checks once, before it starts N processes: each rank would
find the same mistake after seconds of imports and print it N times. No torch here."""

from __future__ import annotations

import os

from lmgym.errors import UsageError
from lmgym.registry import require_environment
from lmgym.train.config import TrainConfig
from lmgym.train.vllm_reachable import rank_checks, unreachable_message


def require_enough_prompts(prompts_per_step: int, processes: int) -> None:
    """Each process samples and trains its own share of a step's prompts: more processes
    than prompts, or shares of unequal size, are refused before anything starts."""
    if processes > prompts_per_step:
        raise UsageError(
            f"{processes} training processes for algorithm.prompts_per_step = {prompts_per_step}: each process "
            f"takes its share of a step's prompts, so use at most {prompts_per_step} processes (--nproc) "
            f"or raise algorithm.prompts_per_step"
        )
    if prompts_per_step % processes:
        raise UsageError(f"algorithm.prompts_per_step = {prompts_per_step} must be divisible by the {processes} processes")


def require_launchable(config: TrainConfig, processes: int) -> None:
    """The checks that need neither torch nor the model: the prompts split evenly, the
    environment's name and arguments are ones it takes, and the vLLM servers listed in
    `engine.base_url` answer (the ranks run on this machine: `--standalone`)."""
    require_enough_prompts(config.algorithm.prompts_per_step, processes)
    require_environment(config.env.name, config.env.args)
    if config.engine.kind == "vllm" and config.engine.servers:
        message = unreachable_message(rank_checks(config.engine.servers, processes))
        if message:
            raise UsageError(message)


def threads_per_rank(processes: int, environ: dict[str, str]) -> str:
    """OMP_NUM_THREADS for each rank: the user's, or this machine's cores shared out
    (torchrun's own default is 1, which leaves all but N cores idle when training on CPUs)."""
    return environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // processes))
