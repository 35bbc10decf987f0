"""How much does lmgym's evaluation path cost on top of the network? Prints a table.

An instant scripted OpenAI-compatible server runs in its own process on loopback. Against
it, in the same run:
  * bare AsyncOpenAI: the official SDK's `chat.completions.create` under a semaphore,
    sending the same requests and doing nothing with the answers;
  * lmgym: `run_eval` on the bundled `arithmetic` environment, which also parses and
    scores every answer and streams every rollout to results.jsonl.
Target: lmgym/bare ≥ 1.0. Then the peak memory of a 20,000-rollout lmgym run, measured
in a fresh process (target < 300 MB: results are streamed, not held).

    python benchmarks/eval_overhead.py [--rollouts 2000] [--concurrency 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from rich.console import Console
from rich.table import Table

from lmgym import OpenAIClient, load_environment
from lmgym.embedded import free_port
from lmgym.eval.runner import run_eval

REPLY = "<answer>42</answer>"


def start_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "lmgym.testing", "--port", str(port), "--reply", REPLY],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    probe = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=1)
    for _ in range(200):
        try:
            probe.models.list()
            return process, base_url
        except openai.APIError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the scripted server did not start")


def environment(rollouts: int):
    return load_environment("arithmetic", num_examples=1, num_eval_examples=rollouts)


async def bare_loop(base_url: str, prompts: list, concurrency: int) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    semaphore = asyncio.Semaphore(concurrency)

    async def one(messages):
        async with semaphore:
            response = await client.chat.completions.create(model="m", messages=messages, max_tokens=64)
            return response.choices[0].message.content

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(prompts) / elapsed


async def lmgym_run(base_url: str, env, examples, concurrency: int) -> float:
    client = OpenAIClient(base_url, "x")
    with tempfile.TemporaryDirectory() as run_dir:
        started = time.perf_counter()
        summary = await run_eval(
            env, client, model="m", examples=examples, rollouts_per_example=1,
            concurrency=concurrency, run_dir=Path(run_dir), sampling_args={"max_tokens": 64},
        )
        elapsed = time.perf_counter() - started
    await client.aclose()
    assert summary.rollouts == len(examples) and not summary.errors, summary.to_dict()
    return len(examples) / elapsed


def memory_child(base_url: str, rollouts: int, concurrency: int) -> None:
    """Run in a fresh process: print the peak RSS (MB) before and after a long run."""
    env = environment(rollouts)
    examples = env.get_eval_examples()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    asyncio.run(lmgym_run(base_url, env, examples, concurrency))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{before:.1f} {after:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-rollouts", type=int, default=20_000)
    parser.add_argument("--memory-child", metavar="BASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_rollouts, args.concurrency)
        return

    console = Console()
    server, base_url = start_server()
    try:
        env = environment(args.rollouts)
        examples = env.get_eval_examples()
        prompts = [e.prompt for e in examples]
        asyncio.run(bare_loop(base_url, prompts[:200], args.concurrency))  # warm up both paths
        asyncio.run(lmgym_run(base_url, env, examples[:200], args.concurrency))
        bare, ours = [], []
        for i in range(args.repeats):  # interleaved, so drift hits both alike
            console.print(f"round {i + 1}/{args.repeats}...")
            bare.append(asyncio.run(bare_loop(base_url, prompts, args.concurrency)))
            ours.append(asyncio.run(lmgym_run(base_url, env, examples, args.concurrency)))
        console.print(f"memory: {args.memory_rollouts:,} rollouts in a fresh process...")
        child = subprocess.run(
            [sys.executable, __file__, "--memory-child", base_url,
             "--memory-rollouts", str(args.memory_rollouts), "--concurrency", str(args.concurrency)],
            capture_output=True, text=True, check=True,
        )
        before_mb, peak_mb = map(float, child.stdout.split())
    finally:
        server.terminate()
        server.wait()

    table = Table(title=f"eval overhead: {args.rollouts:,} single-turn rollouts, concurrency {args.concurrency}, median of {args.repeats}")
    table.add_column("path")
    table.add_column("rollouts/s", justify="right")
    table.add_column("all runs", justify="right")
    bare_median, ours_median = statistics.median(bare), statistics.median(ours)
    table.add_row("bare AsyncOpenAI loop", f"{bare_median:,.0f}", " ".join(f"{x:,.0f}" for x in bare))
    table.add_row("lmgym run_eval (parse, score, stream to disk)", f"{ours_median:,.0f}", " ".join(f"{x:,.0f}" for x in ours))
    table.add_row("ratio lmgym / bare (target ≥ 1.0)", f"{ours_median / bare_median:.2f}", "")
    console.print(table)
    memory = Table(title=f"peak memory of an lmgym run of {args.memory_rollouts:,} rollouts (fresh process)")
    memory.add_column("measure")
    memory.add_column("MB", justify="right")
    memory.add_row("peak RSS before the run (imports, dataset)", f"{before_mb:.0f}")
    memory.add_row("peak RSS after the run (target < 300)", f"{peak_mb:.0f}")
    console.print(memory)


if __name__ == "__main__":
    main()
