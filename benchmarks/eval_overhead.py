"""How much does lmgym's evaluation path cost on top of the network? Whole processes, in one run.

An instant scripted OpenAI-compatible server (`python -m lmgym.testing`) runs in its own
process on loopback. Against it, each of these is started as a process of its own and
timed from start to exit (imports, dataset, connections, every request, results):
  * bare: a bare `AsyncOpenAI` loop, the official SDK's `chat.completions.create` under a
    semaphore, sending the same requests (for `calculator`, the tool call's answer and a
    second request) and doing nothing with the answers;
  * lmgym: `lmgym eval ENV -n N -r 1 -c C`, which also runs the tool, parses and scores
    every answer, and streams every rollout to results.jsonl.
The two alternate, per environment (`arithmetic`, single-turn; `calculator`, a tool call
and then the answer: two requests per rollout) and concurrency (128, 512, 1,024). Each
run is checked: the bare loop prints how many requests were answered, lmgym's
metadata.json must say completed with N rollouts, the expected requests and no errors,
and results.jsonl must hold N lines. Then the peak memory (RSS) of an lmgym process for
10,000 and 100,000 rollouts (the same 10,000 examples, -r 1 and -r 10).

Targets (issue 22): lmgym ≥ 3× bare at concurrency 128; lmgym ≥ 2,000 rollouts/s at 1,024
(single-turn `arithmetic`); peak memory flat from 10,000 to 100,000 rollouts. On 2 cores with other work running,
compare the ratios, not the rates: both paths of one row ran back to back.

    python benchmarks/eval_overhead.py [--rollouts 10000] [--concurrency 128,512,1024]
        [--envs arithmetic,calculator] [--repeats 1] [--memory-rollouts 10000,100000]
        [--event-loop uvloop|asyncio]

The bare child needs only `openai`; it is this file run with --bare-child SPEC.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

REPLY = "<answer>42</answer>"
CALL = ("calculate", {"expression": "6 * 7"})
ENVS = {  # name -> (env args for N examples, requests per rollout)
    "arithmetic": (lambda n: {"num_examples": 1, "num_eval_examples": n}, 1),
    "calculator": (lambda n: {"num_examples": 1, "num_eval_examples": n}, 2),
}


# -- the bare loop, in its own process: imports only the SDK -----------------------------------
def bare_child(spec_path: str) -> None:
    import openai

    spec = json.loads(Path(spec_path).read_text())

    async def main() -> tuple[int, int]:
        client = openai.AsyncOpenAI(base_url=spec["base_url"], api_key="x")
        semaphore = asyncio.Semaphore(spec["concurrency"])
        tools = spec["tools"] or openai.omit
        answered = failed = 0

        async def one(messages: list) -> None:
            nonlocal answered, failed
            async with semaphore:
                try:
                    messages = list(messages)
                    for _ in range(spec["turns"]):
                        response = await client.chat.completions.create(model="m", messages=messages, tools=tools, **spec["sampling"])
                        answered += 1
                        message = response.choices[0].message
                        if not message.tool_calls:
                            break
                        messages.append(message.model_dump(exclude_none=True))
                        messages += [{"role": "tool", "tool_call_id": call.id, "content": "42"} for call in message.tool_calls]
                except openai.APIError:
                    failed += 1

        await asyncio.gather(*(one(prompt) for prompt in spec["prompts"]))
        await client.close()
        return answered, failed

    answered, failed = asyncio.run(main())
    print(json.dumps({"answered": answered, "failed": failed}))


# -- the parent -------------------------------------------------------------------------------
def wait_timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, int, bytes]:
    """Run `command` as a process: (wall s, its CPU s, its peak RSS MB, exit code, stdout).
    Reaped with os.wait4, which gives that one process's own usage."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if code != 0:
            sys.stderr.write(err.read().decode(errors="replace")[-3000:])
        return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code, out.read()


def start_server(env_name: str) -> tuple[object, str]:
    import subprocess

    import openai

    from lmgym.embedded import free_port

    port = free_port()
    command = [sys.executable, "-m", "lmgym.testing", "--port", str(port), "--reply", REPLY]
    if ENVS[env_name][1] > 1:
        command += ["--tool-call", CALL[0], json.dumps(CALL[1])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def lmgym_command() -> list[str]:
    script = Path(sys.executable).with_name("lmgym")
    return [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from lmgym.cli import main; sys.exit(main())"]


def run_lmgym(base_url: str, env_name: str, examples: int, per_example: int, concurrency: int, work: Path, event_loop: str) -> dict:
    """One `lmgym eval` process, checked: the rollouts asked for ran, all of them, without error."""
    run_dir = work / f"lmgym-{env_name}-{concurrency}-{examples}x{per_example}-{time.monotonic_ns()}"
    env_args, turns = ENVS[env_name]
    command = lmgym_command() + [
        "eval", env_name, "-b", base_url, "-m", "m", "-n", str(examples), "-r", str(per_example), "-c", str(concurrency),
        "-a", json.dumps(env_args(examples)), "-o", str(run_dir),
    ]
    environ = {**os.environ, "OPENAI_API_KEY": "x", "LMGYM_EVENT_LOOP": event_loop}
    wall, cpu, peak, code, _ = wait_timed(command, environ)
    rollouts = examples * per_example
    if code != 0:
        raise SystemExit(f"lmgym eval failed (exit {code}): {' '.join(command)}")
    metadata = json.loads((run_dir / "metadata.json").read_text())
    summary = metadata["summary"]
    lines = sum(1 for _ in open(run_dir / "results.jsonl", "rb"))
    problems = [
        f"{what}: {got} (expected {expected})"
        for what, got, expected in [
            ("status", metadata["status"], "completed"), ("rollouts", summary["rollouts"], rollouts),
            ("results.jsonl lines", lines, rollouts), ("requests", summary["requests"], rollouts * turns),
            ("errors", summary["errors"], {}),
        ]
        if got != expected
    ]
    if problems:
        raise SystemExit(f"lmgym eval did not run what was asked ({run_dir}): " + "; ".join(problems))
    return {"rate": rollouts / wall, "wall": wall, "cpu_us": cpu / rollouts * 1e6, "peak_mb": peak}


def run_bare(spec_path: Path, rollouts: int, turns: int) -> dict:
    """One bare-loop process; requests that failed for good (its SDK's retries spent) are counted."""
    wall, cpu, _, code, out = wait_timed([sys.executable, __file__, "--bare-child", str(spec_path)])
    if code != 0:
        raise SystemExit(f"the bare loop failed (exit {code})")
    counts = json.loads(out.decode().strip().splitlines()[-1])
    if not counts["failed"] and counts["answered"] != rollouts * turns:
        raise SystemExit(f"the bare loop answered {counts['answered']} requests, not {rollouts * turns}")
    return {"rate": (rollouts - counts["failed"]) / wall, "wall": wall, "cpu_us": cpu / rollouts * 1e6, "failed": counts["failed"]}


def write_spec(path: Path, env_name: str, rollouts: int, concurrency: int, base_url: str) -> None:
    """The bare loop's requests: the prompts, tools and sampling lmgym sends for these examples."""
    from lmgym.registry import load_environment

    env_args, turns = ENVS[env_name]
    env = load_environment(env_name, **env_args(rollouts))
    examples = env.get_eval_examples(rollouts)
    assert len(examples) == rollouts, f"{env_name} made {len(examples)} examples, not {rollouts}"
    spec = {
        "base_url": base_url, "concurrency": concurrency, "turns": turns, "sampling": dict(env.sampling_args),
        "tools": env.tools_for(examples[0]), "prompts": [example.prompt for example in examples],
    }
    path.write_text(json.dumps(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=10_000)
    parser.add_argument("--concurrency", default="128,512,1024", help="comma-separated")
    parser.add_argument("--envs", default="arithmetic,calculator", help="comma-separated: arithmetic, calculator")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--memory-rollouts", default="10000,100000", help="comma-separated; '' skips the memory runs")
    parser.add_argument("--event-loop", default="uvloop", choices=["uvloop", "asyncio"], help="lmgym's (LMGYM_EVENT_LOOP)")
    parser.add_argument("--bare-child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        bare_child(args.bare_child)
        return

    import statistics
    import tempfile

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 150))
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    rows, memory = [], []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for env_name in args.envs.split(","):
            turns = ENVS[env_name][1]
            server, base_url = start_server(env_name)
            try:
                for concurrency in concurrencies:
                    spec = work / f"{env_name}-{concurrency}.json"
                    write_spec(spec, env_name, args.rollouts, concurrency, base_url)
                    bare, ours = [], []
                    for repeat in range(args.repeats):  # alternating which goes first
                        console.print(f"{env_name}, concurrency {concurrency}, round {repeat + 1}/{args.repeats}...")
                        order = ["bare", "lmgym"] if repeat % 2 == 0 else ["lmgym", "bare"]
                        for path in order:
                            if path == "bare":
                                bare.append(run_bare(spec, args.rollouts, turns))
                            else:
                                ours.append(run_lmgym(base_url, env_name, args.rollouts, 1, concurrency, work, args.event_loop))
                    rows.append((env_name, concurrency, bare, ours))
                if env_name == "arithmetic" and args.memory_rollouts:
                    for total in [int(n) for n in args.memory_rollouts.split(",")]:
                        examples = min(total, 10_000)
                        console.print(f"memory: {total:,} rollouts ({examples:,} examples × {total // examples})...")
                        result = run_lmgym(base_url, env_name, examples, total // examples, 128, work, args.event_loop)
                        memory.append((total, examples, result))
            finally:
                server.terminate()
                server.wait()

    def median(results: list[dict], key: str) -> float:
        values = [r[key] for r in results if r[key] == r[key]]  # NaN: a failed run
        return statistics.median(values) if values else float("nan")

    table = Table(title=f"lmgym eval vs a bare AsyncOpenAI loop: {args.rollouts:,} rollouts, whole processes, "
                        f"median of {args.repeats}, lmgym on {args.event_loop}")
    for column in ["env (requests/rollout)", "concurrency", "bare rollouts/s", "lmgym rollouts/s", "lmgym/bare",
                   "bare CPU µs/rollout", "lmgym CPU µs/rollout", "target"]:
        table.add_column(column, justify="left" if column.startswith("env") else "right")
    verdicts = []
    for env_name, concurrency, bare, ours in rows:
        bare_rate, our_rate = median(bare, "rate"), median(ours, "rate")
        failed = sum(r.get("failed", 0) for r in bare)
        bare_text = f"{bare_rate:,.0f}" + (f" ({failed:,} failed)" if failed else "")
        target = ""
        if concurrency == 128:
            ok = our_rate >= 3 * bare_rate
            target = f"≥ 3×: {'yes' if ok else 'NO'}"
            verdicts.append(ok)
        elif concurrency == 1024 and ENVS[env_name][1] == 1:  # rollouts of one request each
            ok = our_rate >= 2000
            target = f"≥ 2,000/s: {'yes' if ok else 'NO'}"
            verdicts.append(ok)
        table.add_row(f"{env_name} ({ENVS[env_name][1]})", f"{concurrency:,}", bare_text, f"{our_rate:,.0f}",
                      f"{our_rate / bare_rate:.2f}×", f"{median(bare, 'cpu_us'):,.0f}", f"{median(ours, 'cpu_us'):,.0f}", target)
    console.print(table)
    if memory:
        memory_table = Table(title="peak memory (RSS) of one lmgym eval process, arithmetic, concurrency 128")
        for column in ["rollouts", "examples × rollouts each", "rollouts/s", "peak RSS MB"]:
            memory_table.add_column(column, justify="right")
        for total, examples, result in memory:
            memory_table.add_row(f"{total:,}", f"{examples:,} × {total // examples}", f"{result['rate']:,.0f}", f"{result['peak_mb']:.0f}")
        console.print(memory_table)
        if len(memory) > 1:
            growth = memory[-1][2]["peak_mb"] - memory[0][2]["peak_mb"]
            console.print(f"peak RSS grew {growth:+.0f} MB from {memory[0][0]:,} to {memory[-1][0]:,} rollouts")
    console.print("on 2 shared cores the rates move with other work; each row's two paths ran back to back")


if __name__ == "__main__":
    main()
