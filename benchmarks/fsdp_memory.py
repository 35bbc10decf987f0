"""What does each rank hold under `trainer.strategy = "ddp"` and `"fsdp"`? Measured bytes.

For each strategy, N training processes (torchrun, gloo on the CPU) build the trainer of
`configs/reverse-digits.toml` on the chosen model, sample one batch and take one
optimiser step; then each rank sums the storage of the tensors it holds, read from the
live objects (never computed from parameter counts):

  * parameters: every parameter's local tensor (a DTensor's shard under FSDP),
  * gradients: every parameter's `.grad` local tensor,
  * optimizer state: every tensor in AdamW's state (both moments and the step count).

Each storage is counted once, however many tensors view it (tied embeddings, FSDP's
padded shard buffers); the activations and the rollout engine's transient copy of the
weights (FSDP gathers them for sampling) are not part of it.

    python benchmarks/fsdp_memory.py [--model tiny-llama|smollm2] [--nproc 2] [--lora]

The worker is this file run under torchrun with --worker STRATEGY OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "reverse-digits.toml"
SMALL = [
    "env.args={num_examples=50, num_eval_examples=10}", "algorithm.group_size=2", "trainer.micro_batch_size=4",
    "eval.every=0", "logging.console_every=0", "sft.warm_start=false", "sampling.max_tokens=8",
]
KINDS = ("parameters", "gradients", "optimizer state")


def local(tensor):
    """The part of `tensor` this rank stores (a DTensor's shard)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (each counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        storage = local(tensor).untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def held_bytes(model, optimizer) -> dict[str, int]:
    params = list(model.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if hasattr(v, "untyped_storage")]
    return {
        "parameters": storage_bytes(params),
        "gradients": storage_bytes([p.grad for p in params if p.grad is not None]),
        "optimizer state": storage_bytes(state),
    }


def worker(strategy: str, out: Path, overrides: list[str]) -> None:
    """One rank: build, sample, step, measure; rank 0 writes every rank's numbers to `out`."""
    import torch.distributed as dist

    from lmgym.train.config import load_config
    from lmgym.train.metrics import NullSink
    from lmgym.train.session import build_loop

    config = load_config(CONFIG, [*SMALL, *overrides, f"trainer.strategy={strategy}"])
    loop = build_loop(config, Path(tempfile.mkdtemp(prefix="fsdp_memory_")), NullSink())
    with loop.trainer.full_weights():
        batch = loop.orchestrator.next_batch(0)
    loop.trainer.step(batch)
    rows: list[dict[str, int]] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(rows, held_bytes(loop.model, loop.trainer.optimizer))
    if dist.get_rank() == 0:
        out.write_text(json.dumps(rows))
    loop.orchestrator.close()
    dist.destroy_process_group()


def measure(strategy: str, nproc: int, overrides: list[str]) -> list[dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bytes.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   __file__, "--worker", strategy, str(out), *overrides]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{strategy} failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def table(results: dict[str, list[dict[str, int]]]) -> str:
    lines = ["| strategy | rank | " + " | ".join(KINDS) + " | total |", "|---|---|" + "---|" * (len(KINDS) + 1)]
    for strategy, rows in results.items():
        for rank, held in enumerate(rows):
            cells = [mib(held[k]) for k in KINDS] + [mib(sum(held.values()))]
            lines.append(f"| {strategy} | {rank} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-llama", help="tiny-llama (default), smollm2, or any model name lmgym loads")
    parser.add_argument("--nproc", type=int, default=2, help="training processes per strategy")
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    parser.add_argument("--worker", nargs=2, metavar=("STRATEGY", "OUT"), help=argparse.SUPPRESS)
    args, overrides = parser.parse_known_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), overrides)
        return
    overrides = [f"model.name={args.model}", f"algorithm.prompts_per_step={args.nproc}",
                 *(["model.lora.enabled=true"] if args.lora else [])]
    results = {strategy: measure(strategy, args.nproc, overrides) for strategy in ("ddp", "fsdp")}
    print(f"{args.model}{' (LoRA)' if args.lora else ''}, {args.nproc} processes, float32, after one AdamW step:\n")
    print(table(results))
    for kind in KINDS:
        ddp, fsdp = results["ddp"][0][kind], results["fsdp"][0][kind]
        print(f"{kind}: rank 0 holds {fsdp / ddp:.2f} of DDP's under FSDP" if ddp else f"{kind}: none")


if __name__ == "__main__":
    main()
