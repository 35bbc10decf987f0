"""What does `lmgym proxy` cost under load, and does it lose or leak anything? Prints a table.

Three processes on loopback, so that each has its own interpreter and event loop as in a
deployment (on a 2-core machine they compete for the cores, which makes the numbers
pessimistic rather than flattering):
  * the upstream: `python -m lmgym.testing`, an instant scripted server with a fixed reply;
  * the proxy: `python -m lmgym proxy`, exactly as a user starts it, with the upstream key
    in OPENAI_API_KEY and the client token in LMGYM_PROXY_TOKEN;
  * this script: CLIENTS concurrent agents, each its own `openai.AsyncOpenAI` (own
    connection pool, no SDK retries), each sending REQUESTS chat requests one after the
    other, straight to the upstream and through the proxy, in alternating rounds so that
    drift in the machine's load hits both alike; the table gives medians over rounds.
Then it checks that every proxied exchange is in the traces exactly once (each request
carries a unique marker, each trace a unique id), that each got status 200, and that the
upstream key appears in no trace file and nowhere in the proxy's output. A request that
fails is counted in the table, never retried.

    python benchmarks/proxy_load.py [--clients 200] [--requests 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
import orjson
from rich.console import Console
from rich.table import Table

from lmgym.embedded import free_port

UPSTREAM_KEY = "sk-bench-upstream-key-do-not-leak-0123456789"
TOKEN = "bench-proxy-token-0123456789"
REPLY = "The answer is 42."


@dataclass
class Round:
    rate: float = 0.0  # successful requests per second
    latencies: list[float] = field(default_factory=list)
    succeeded: set[str] = field(default_factory=set)  # markers
    errors: collections.Counter = field(default_factory=collections.Counter)


def wait_until_up(base_url: str, api_key: str, process: subprocess.Popen, name: str) -> None:
    probe = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            probe.models.list()
            return
        except openai.APIConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the {name} did not start")


async def load(base_url: str, api_key: str, clients: int, requests: int, tag: str) -> Round:
    sdks = [openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120) for _ in range(clients)]
    result = Round()

    async def agent(c: int) -> None:
        for i in range(requests):
            marker = f"{tag}-{c}-{i}"
            messages = [{"role": "system", "content": "You are a test agent."},
                        {"role": "user", "content": f"marker {marker} : what is 6 x 7?"}]
            started = time.perf_counter()
            try:
                response = await sdks[c].chat.completions.create(
                    model="bench", messages=messages, temperature=0.0, max_tokens=16,
                    extra_headers={"X-Session-Id": f"agent-{c}"},
                )
            except openai.APIError as exc:
                result.errors[f"{type(exc).__name__} ({type(exc.__cause__).__name__ if exc.__cause__ else exc})"] += 1
                continue
            result.latencies.append(time.perf_counter() - started)
            result.succeeded.add(marker)
            assert response.choices[0].message.content == REPLY

    started = time.perf_counter()
    await asyncio.gather(*(agent(c) for c in range(clients)))
    result.rate = len(result.latencies) / (time.perf_counter() - started)
    await asyncio.gather(*(sdk.close() for sdk in sdks))
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]  # nearest rank


def check_traces(out: Path, rounds: list[Round]) -> tuple[int, int, int]:
    """Each answered proxied request recorded exactly once, no key anywhere; returns (records, files, errors)."""
    files = sorted(out.glob("traces-*.jsonl"))
    records = [orjson.loads(line) for path in files for line in path.read_bytes().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a trace id appears twice"
    markers = collections.Counter(r["request"]["messages"][1]["content"].split()[1] for r in records)
    assert set(markers.values()) == {1}, "an exchange was recorded more than once"
    for round_ in rounds:
        missing = round_.succeeded - set(markers)
        assert not missing, f"{len(missing)} answered exchanges are missing from the traces"
    for path in files:
        assert UPSTREAM_KEY.encode() not in path.read_bytes(), f"the upstream key is in {path}"
    return len(records), len(files), sum(r["status"] != 200 or r["error"] is not None for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=10, help="requests per client, one after the other")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each path, alternating")
    parser.add_argument("--rotate-mb", type=float, default=1.0, help="small, so that rotation happens under load")
    args = parser.parse_args()
    console = Console()

    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / "traces", Path(tmp) / "proxy.log"
        upstream_port, proxy_port = free_port(), free_port()
        upstream = subprocess.Popen(
            [sys.executable, "-m", "lmgym.testing", "--port", str(upstream_port), "--reply", REPLY],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        env = {**os.environ, "OPENAI_API_KEY": UPSTREAM_KEY, "LMGYM_PROXY_TOKEN": TOKEN}
        with log.open("w") as log_file:
            proxy = subprocess.Popen(
                [sys.executable, "-m", "lmgym", "proxy", "--upstream", f"http://127.0.0.1:{upstream_port}/v1",
                 "--port", str(proxy_port), "--out", str(out), "--rotate-mb", str(args.rotate_mb)],
                env=env, stdout=log_file, stderr=subprocess.STDOUT,
            )
        paths = {"direct": (f"http://127.0.0.1:{upstream_port}/v1", "x"), "proxied": (f"http://127.0.0.1:{proxy_port}/v1", TOKEN)}
        runs: dict[str, list[Round]] = {"direct": [], "proxied": []}
        try:
            wait_until_up(*paths["direct"], upstream, "scripted upstream")
            wait_until_up(*paths["proxied"], proxy, "proxy")
            for name, (url, key) in paths.items():  # connections, imports, caches
                runs[name].append(asyncio.run(load(url, key, 50, 4, f"{name}warmup")))
            for r in range(args.rounds):
                for name, (url, key) in paths.items():
                    console.print(f"round {r + 1}/{args.rounds}, {name}: {args.clients} clients × {args.requests} requests...")
                    runs[name].append(asyncio.run(load(url, key, args.clients, args.requests, f"{name}{r}")))
        finally:
            proxy.terminate()
            proxy.wait(timeout=60)
            upstream.terminate()
            upstream.wait(timeout=60)
        records, files, error_records = check_traces(out, runs["proxied"])
        proxy_output = log.read_text()
        assert UPSTREAM_KEY not in proxy_output, "the upstream key is in the proxy's output"
        assert "stopped:" in proxy_output, proxy_output

    measured = {name: rounds[1:] for name, rounds in runs.items()}  # without the warm-up

    def median(name: str, stat) -> float:
        return statistics.median(stat(r) for r in measured[name])

    def p50(r: Round) -> float:
        return percentile(r.latencies, 50) * 1000

    def p99(r: Round) -> float:
        return percentile(r.latencies, 99) * 1000

    table = Table(title=f"lmgym proxy under load: {args.clients} concurrent clients × {args.requests} requests, "
                        f"median of {args.rounds} alternating rounds (upstream, proxy and clients: separate processes "
                        f"on {os.cpu_count()} cores)")
    for column in ("path", "requests/s", "p50 (ms)", "p99 (ms)", "failed requests", "requests/s, each round"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, label in (("direct", "direct to the upstream"), ("proxied", "through lmgym proxy")):
        errors = collections.Counter()
        for r in measured[name]:
            errors.update(r.errors)
        table.add_row(
            label, f"{median(name, lambda r: r.rate):,.0f}", f"{median(name, p50):.1f}", f"{median(name, p99):.1f}",
            ", ".join(f"{n} {kind}" for kind, n in errors.items()) or "0",
            " ".join(f"{r.rate:,.0f}" for r in measured[name]),
        )
    table.add_row(
        "added by the proxy", f"{median('proxied', lambda r: r.rate) / median('direct', lambda r: r.rate):.2f}× the rate",
        f"{median('proxied', p50) - median('direct', p50):+.1f}", f"{median('proxied', p99) - median('direct', p99):+.1f}", "", "",
    )
    console.print(table)
    answered = sum(len(r.succeeded) for r in measured["proxied"])
    console.print(
        f"traces: all {answered:,} answered proxied exchanges recorded exactly once ({records:,} records with the "
        f"warm-up, {files} files at --rotate-mb {args.rotate_mb:g}, {error_records} with an error); the upstream key is "
        "in no trace file and not in the proxy's output."
    )


if __name__ == "__main__":
    main()
