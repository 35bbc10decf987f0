"""`lmgym train` and `lmgym sft`: GRPO and supervised fine-tuning from a TOML config.

Both take dotted overrides after the config, e.g. `--trainer.lr 1e-5 --algorithm.loss dapo`.
Torch is imported only when one of these commands runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from lmgym import errors
from lmgym.cli.common import INTERRUPTED, console, exit_on_error, print_error

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}


def _quiet_transformers() -> None:
    """The per-step console line is the progress report; transformers' bars only add noise."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _load(config_path: Optional[Path], overrides: list[str], resume: Optional[Path]):
    from lmgym.train.config import load_config
    from lmgym.train.run_files import CONFIG_FILE

    if resume is not None:
        stored = resume / CONFIG_FILE
        if not stored.exists():
            raise errors.UsageError(f"--resume {resume}: no {CONFIG_FILE} there; is it a training run directory?")
        return load_config(config_path or stored, overrides)
    if config_path is None:
        raise errors.UsageError("give a config file (see configs/), or --resume RUN_DIR")
    return load_config(config_path, overrides)


def train_command(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Argument(help="TOML config (see configs/). Optional with --resume.")] = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue this run directory from its last checkpoint.")] = None,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Data-parallel training processes on this machine (torch.distributed: gloo on CPU, one GPU each with nccl); each samples and trains 1/N of every step's prompts.")] = 1,
) -> None:
    """Train a policy with GRPO-family RL on an environment (one CPU or one GPU, or --nproc N).

    Extra options are dotted config overrides: --trainer.lr 1e-5 --algorithm.group_size 4.
    Exits with status 3 when the live audit stops the run ([audit] actions = "stop").
    """
    overrides = list(ctx.args)
    if config is not None and str(config).startswith("-"):  # `--resume RUN --a.b 1`: no config given
        config, overrides = None, [str(config), *overrides]
    run_dir = resume
    main_rank = os.environ.get("RANK", "0") == "0"
    try:
        with exit_on_error():
            cfg = _load(config, overrides, resume)
            from lmgym.rundir import RunLock, discard_if_unused, require_fresh_dir
            from lmgym.train.run_files import default_run_dir

            launcher = nproc > 1 and "LOCAL_RANK" not in os.environ  # it imports no torch
            if launcher:
                from lmgym.train.launch import require_launchable

                require_launchable(cfg, nproc)  # once, before a run directory or N processes
            created_here = resume is None and not _named_dir_exists(cfg)
            run_dir = resume or default_run_dir(cfg, "train")
            if resume is None and main_rank:  # rank 0 checks before it writes; the other ranks never do
                require_fresh_dir(run_dir)
            if launcher:
                if resume is not None:
                    RunLock(run_dir).acquire().release()  # refuse a run in use before starting N processes
                with discard_if_unused(run_dir, created_here):  # the ranks were given it: this process removes it
                    raise typer.Exit(launch_processes(nproc, config, resume, [*overrides, "--logging.output_dir", str(run_dir)]))
            from lmgym.train.distributed import ReportedByMain
            from lmgym.train.live_audit import STOP_EXIT_CODE, AuditStopped
            from lmgym.train.session import train

            _quiet_transformers()
            if main_rank:
                console.print(f"run directory: {run_dir}")
            try:
                train(cfg, run_dir, resume=resume is not None, created_here=created_here)
            except AuditStopped as stopped:  # its own status, so a sweep can tell it from a crash
                if main_rank:
                    print_error(stopped)
                raise typer.Exit(STOP_EXIT_CODE) from None
            except ReportedByMain:  # rank 0 prints the error; the other ranks stop without repeating it
                raise typer.Exit(1) from None
            if main_rank:
                console.print(f"[green]done.[/] policy saved to {run_dir / 'final'}")
    except KeyboardInterrupt:
        from lmgym.train.run_files import CONFIG_FILE

        if run_dir is not None and (run_dir / CONFIG_FILE).exists():
            console.print(f"[yellow]interrupted.[/] continue from the last checkpoint with: lmgym train --resume {run_dir}")
        else:
            console.print("[yellow]interrupted[/] before the run started; nothing was saved")
        raise typer.Exit(INTERRUPTED) from None


def _named_dir_exists(cfg) -> bool:
    """Whether `logging.output_dir` names a directory that is already there (which a failed
    start must leave in place); unset, a new directory is claimed."""
    return cfg.logging.output_dir is not None and Path(cfg.logging.output_dir).exists()


def launch_processes(nproc: int, config: Optional[Path], resume: Optional[Path], overrides: list[str]) -> int:
    """Run this same command in `nproc` processes under torchrun (`lmgym.train.torchrun`)."""
    from lmgym.train.launch import threads_per_rank

    command = [
        sys.executable, "-m", "lmgym.train.torchrun", "--standalone", f"--nproc-per-node={nproc}",
        "-m", "lmgym", "train", *([str(config)] if config else []), *(["--resume", str(resume)] if resume else []), *overrides,
    ]
    threads = threads_per_rank(nproc, dict(os.environ))
    console.print(f"starting {nproc} training processes (torch.distributed.run, {threads} thread{'' if threads == '1' else 's'} each)")
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": threads}).returncode


def sft_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="TOML config; its \\[sft] section says what data and how long.")],
) -> None:
    """Supervised fine-tuning on chat messages (a warm start before RL, or distillation).

    Extra options are dotted config overrides: --sft.lr 1e-4 --sft.data traces.jsonl
    """
    with exit_on_error():
        cfg = _load(config, list(ctx.args), None)
        from lmgym.rundir import require_fresh_dir
        from lmgym.train.run_files import default_run_dir
        from lmgym.train.session import sft

        _quiet_transformers()
        created_here = not _named_dir_exists(cfg)
        run_dir = default_run_dir(cfg, "sft")
        require_fresh_dir(run_dir, resume_flag=None)  # `lmgym sft` runs cannot be continued
        console.print(f"run directory: {run_dir}")
        sft(cfg, run_dir, created_here=created_here)
        console.print(f"[green]done.[/] model saved to {run_dir / 'final'}")
