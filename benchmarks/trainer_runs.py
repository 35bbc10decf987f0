"""What the trainer-versus-trainer benchmarks share: each trainer in a fresh subprocess of
the benchmark's own script (its result one JSON line after RESULT_PREFIX, with the share
of the CPU other processes used meanwhile), TRL's steps and generations timed from the
outside, and the medians of what a run measured.
"""

from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT_PREFIX = "GRPO_VS_TRL_RESULT "
WARNING = re.compile(r"\w*Warning: |^WARNING\b")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_timer():
    """A `TrainerCallback` that times each optimizer step (on_step_begin to on_step_end) and
    keeps every logged row."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.started = 0.0
            self.step_s: list[float] = []
            self.logs: list[dict] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_s.append(time.perf_counter() - self.started)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                self.logs.append(dict(logs))

    return StepTimer()


def time_generation(trainer) -> tuple[list[float], list[list[int]]]:
    """Wraps TRL's `_generate_single_turn`: the seconds of each generation, and the tokens fed
    to the backbone by each forward call of each (to tell whether a KV cache was used)."""
    import torch

    generation_s: list[float] = []
    generate = trainer._generate_single_turn
    widths: list[list[int]] = []

    def record_width(_module, _args, kwargs):
        if kwargs.get("input_ids") is not None:
            widths[-1].append(kwargs["input_ids"].shape[1])

    def timed_generate(*a, **kw):
        widths.append([])
        hook = trainer.model.get_decoder().register_forward_pre_hook(record_width, with_kwargs=True)
        started = time.perf_counter()
        try:
            return generate(*a, **kw)
        finally:
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()  # the GPU's work is part of the generation's time
            generation_s.append(time.perf_counter() - started)
            hook.remove()

    trainer._generate_single_turn = timed_generate
    return generation_s, widths


def kv_cache_note(widths: list[list[int]]) -> str:
    decode = [w for call in widths for w in call[1:]]
    cached = "a KV cache was used" if decode and max(decode) == 1 else "NO KV cache"
    return (f"generate: {sum(map(len, widths))} forward calls in {len(widths)} generations; after each prefill "
            f"({min(c[0] for c in widths)}..{max(c[0] for c in widths)} tokens wide) every call fed "
            f"{min(decode, default=0)}..{max(decode, default=0)} token(s), so {cached}")


def cpu_seconds() -> tuple[float, float] | None:
    """(busy, busy + idle) CPU seconds of the whole machine since boot, from /proc/stat (Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    busy = user + nice + system + irq + softirq + steal
    return busy / tick, (busy + idle + iowait) / tick


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class ChildFailed(SystemExit):
    """A trainer's process failed or ran out of time (uncaught, it ends the benchmark)."""


def run_child(which: str, steps: int, console, *, script: str, extra: tuple[str, ...] = (), cwd: str | None = None,
              timeout: float | None = None) -> dict:
    """`script --child WHICH --steps STEPS EXTRA...` in a fresh process (in `cwd`): the dict it
    printed after RESULT_PREFIX, with its warnings and the CPU share other processes used.
    Raises ChildFailed, after printing the end of its output, if it fails or outlives `timeout` s."""
    console.print(f"[bold]{which}[/]: {steps} steps in a fresh process...")
    machine_before, ours_before = cpu_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    command = [sys.executable, script, "--child", which, "--steps", str(steps), *extra]
    try:
        process = subprocess.run(command, capture_output=True, text=True, check=False, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        for output in (expired.stdout, expired.stderr):
            text = output.decode(errors="replace") if isinstance(output, bytes) else output or ""
            console.print(text[-4000:], markup=False)
        raise ChildFailed(f"the {which} run outlived its {timeout:.0f} s and was killed") from None
    lines = process.stdout.splitlines()
    found = [line[len(RESULT_PREFIX):] for line in lines if line.startswith(RESULT_PREFIX)]
    if process.returncode or not found:
        console.print(process.stdout[-4000:], markup=False)
        console.print(process.stderr[-8000:], markup=False)
        raise ChildFailed(f"the {which} run failed (exit status {process.returncode})")
    result = json.loads(found[-1])
    result["warnings"] = sorted({line.strip() for line in process.stderr.splitlines() if WARNING.search(line)})
    machine_after, ours_after = cpu_seconds(), children_cpu_seconds()
    result["others_cpu_share"] = float("nan")
    if machine_before and machine_after:  # the share of the machine's CPU time that other processes used
        busy = machine_after[0] - machine_before[0]
        capacity = machine_after[1] - machine_before[1]
        result["others_cpu_share"] = max(0.0, busy - (ours_after - ours_before)) / max(capacity, 1e-9)
    console.print(f"  done in {time.perf_counter() - started:.0f}s (process wall time); other processes used "
                  f"{result['others_cpu_share']:.0%} of the machine's CPU meanwhile")
    return result


def summarise(result: dict) -> dict:
    steps, tokens, generation = result["step_s"], result["completion_tokens"], result["generation_s"]
    later = slice(1, None) if len(steps) > 1 else slice(None)
    rest = [s - g for s, g in zip(steps, generation)]
    return {
        "median": statistics.median(steps[later]),
        "mean": statistics.fmean(steps),
        "generation": statistics.median(generation[later]),
        "rest": statistics.median(rest[later]),
        "tokens_per_s": sum(tokens[later]) / sum(steps[later]),
        "reward": statistics.fmean(result["reward"]),
    }
