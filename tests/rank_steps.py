"""The runs of the three exactness tests of data parallelism (tests/e2e/test_distributed.py,
test_fsdp.py, test_dr_grpo_ranks.py): each one's batch and its training step in one
process with the whole batch, prepared here, and the step of two processes with half the
batch each, run for all three by ONE torchrun of tests/fixtures/ddp_step.py (a torchrun
costs its ranks' imports of torch and transformers: once, not three times).

The same torchrun then checks a vLLM server nothing listens on from both ranks, for
tests/unit/train/test_vllm_ranks.py (`reach_outcomes`): a run's ranks check their servers
before the first step.

`run_all` does it all in a folder of its own and returns a record (JSON) of where each
test's results are, or why they are not; conftest.py's `rank_step_runs` runs it once for
the whole pytest run, whichever worker asks first; a test reads its part with `results`.
"""

from __future__ import annotations

import json
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from paths import FIXTURES
from train_setups import CONFIG, SMALL, torchrun

from lmgym.embedded import free_port
from lmgym.train.config import load_config
from lmgym.train.metrics import NullSink
from lmgym.train.session import build_loop
from lmgym.train.tokens import TokenSample

WORKER = FIXTURES / "ddp_step.py"  # one trainer step per run on this rank's half of each batch

LOSSES = ["grpo", "dr_grpo", "dapo", "cispo"]  # test_distributed: each loss under DDP
LORA = ["model.lora.enabled=true", "trainer.lr=5e-2"]
RUNS = {  # test_fsdp: each named run of overrides under FSDP
    "grpo": ["algorithm.loss=grpo"],
    "cispo": ["algorithm.loss=cispo"],
    "grpo-lora": ["algorithm.loss=grpo", *LORA],
    "cispo-lora": ["algorithm.loss=cispo", *LORA],
    "grpo-bf16": ["algorithm.loss=grpo", "model.dtype=bfloat16"],  # autocast, as in one process
}

BATCH, SINGLE = "batch.pt", "single.pt"


def distributed(folder: Path) -> Callable[[], dict]:
    """test_distributed's batch, saved for ddp_step.py; returns its one-process steps, to run."""
    overrides = [*SMALL, "trainer.lr=1e-2", "sampling.temperature=1.0"]
    trainer = build_loop(load_config(CONFIG, overrides), folder / "gen", NullSink())
    batch = trainer.orchestrator.next_batch(0)
    informative = sum(a != 0 for a in batch.advantages)
    assert informative >= 4, "the batch should train something"
    torch.save({"batch": batch, "config": str(CONFIG), "overrides": overrides, "losses": LOSSES}, folder / BATCH)

    def single() -> dict:
        weights = {}
        for loss in LOSSES:
            one = build_loop(load_config(CONFIG, [*overrides, f"algorithm.loss={loss}"]), folder / loss, NullSink())
            initial = {n: p.detach().clone() for n, p in one.model.named_parameters()}
            one.trainer.step(batch)
            weights[loss] = {n: p.detach().clone() for n, p in one.model.named_parameters()}
            assert any(not torch.equal(initial[n], weights[loss][n]) for n in initial)  # the step moved the weights
        return weights

    return single


def fsdp(folder: Path) -> Callable[[], dict]:
    """test_fsdp's batch, saved for ddp_step.py; returns its one-process steps, to run."""
    overrides = [*SMALL, "trainer.lr=1e-2", "sampling.temperature=1.0", "trainer.max_grad_norm=0.01"]
    batch = build_loop(load_config(CONFIG, overrides), folder / "gen", NullSink()).orchestrator.next_batch(0)
    assert sum(a != 0 for a in batch.advantages[0::2]) and sum(a != 0 for a in batch.advantages[1::2])
    sharded = [*overrides, "trainer.strategy=fsdp"]
    torch.save({"batch": batch, "config": str(CONFIG), "overrides": sharded, "runs": RUNS, "output": "fsdp_weights.pt"}, folder / BATCH)

    def single() -> dict:
        results = {}
        for name, extra in RUNS.items():
            one = build_loop(load_config(CONFIG, [*overrides, *extra]), folder / name, NullSink())
            initial = {n: p.detach().clone() for n, p in one.model.named_parameters() if p.requires_grad}
            metrics = one.trainer.step(batch)
            assert metrics["grad_norm"] > 0.01, name  # the clip is in play: its norm must be the whole gradient's
            results[f"grad_norm/{name}"] = metrics["grad_norm"]
            results[name] = {n: p.detach().clone() for n, p in one.model.named_parameters()}
            # Adam's first step, and the clip, hardly depend on the gradient's scale: the norm
            # before the clip shows a mean taken for a sum, the clipped gradient a rank's own norm
            results[f"grad/{name}"] = {n: p.grad.clone() for n, p in one.model.named_parameters() if p.grad is not None}
            assert any(not torch.equal(initial[n], results[name][n]) for n in initial), name
        return results

    return single


def dr_grpo(folder: Path) -> Callable[[], dict]:
    """test_dr_grpo_ranks's batch, whose halves pad to different widths, saved for
    ddp_step.py; returns its one-process step, to run."""
    overrides = [*SMALL, "trainer.lr=1e-2", "sampling.temperature=1.0", "trainer.max_grad_norm=1e9"]
    config = load_config(CONFIG, [*overrides, "algorithm.loss=dr_grpo"])
    batch = build_loop(config, folder / "gen", NullSink()).orchestrator.next_batch(0)
    # Rank 1 gets the odd samples: one of them is followed by 30 environment tokens (mask 0,
    # as a tool result after the reply), so rank 1 pads 30 columns wider than rank 0.
    long = batch.samples[1]
    batch.samples[1] = TokenSample(long.input_ids + long.input_ids[-1:] * 30, long.loss_mask + [0] * 30,
                                   long.sampler_logprobs + [0.0] * 30)
    assert sum(a != 0 for a in batch.advantages[0::2]) and sum(a != 0 for a in batch.advantages[1::2])
    torch.save({"batch": batch, "config": str(CONFIG), "overrides": overrides, "losses": ["dr_grpo"]}, folder / BATCH)

    def single() -> dict:
        one = build_loop(config, folder / "one", NullSink())
        initial = {n: p.detach().clone() for n, p in one.model.named_parameters()}
        one.trainer.step(batch)
        weights = {n: p.detach().clone() for n, p in one.model.named_parameters()}
        assert any(not torch.equal(initial[n], weights[n]) for n in initial)
        return weights

    return single


SETUPS = {"distributed": distributed, "fsdp": fsdp, "dr_grpo": dr_grpo}
OUTPUTS = {"distributed": "ddp_weights.pt", "fsdp": "fsdp_weights.pt", "dr_grpo": "ddp_weights.pt"}  # what rank 0 writes


def run_all(folder: Path) -> dict:
    """Every test's batch; then ONE torchrun with 2 ranks of ddp_step.py over all the
    batches, while this process runs each test's one-process steps. The record: per test,
    its folder, or the error that stopped its preparation; and the torchrun's exit code
    and standard error."""
    record: dict = {}
    singles = {}
    for name, setup in SETUPS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        try:
            singles[name] = setup(folder / name)
        except Exception:  # noqa: BLE001 - the test it belongs to reports it; the others still run
            record[name] = {"error": f"preparing the batch failed:\n{traceback.format_exc()}"}
    launched: dict = {}
    reach = folder / "reach"
    reach.mkdir()
    (reach / "servers.json").write_text(json.dumps([f"http://127.0.0.1:{free_port()}"]))  # bound, then released
    record["reach"] = {"folder": str(reach)}

    def launch() -> None:
        try:
            launched["result"] = torchrun(2, str(WORKER), "--reach", str(reach), *(str(folder / name / BATCH) for name in singles))
        except Exception:  # noqa: BLE001 - a timeout, say: each test reports it
            launched["error"] = traceback.format_exc()

    ranks = threading.Thread(target=launch, daemon=True)  # it waits on the processes: this one computes meanwhile
    if singles:
        ranks.start()
    for name, single in singles.items():
        try:
            torch.save(single(), folder / name / SINGLE)
            record[name] = {"folder": str(folder / name)}
        except Exception:  # noqa: BLE001
            record[name] = {"error": f"the step in one process failed:\n{traceback.format_exc()}"}
    if singles:
        ranks.join()
    if "error" in launched:
        record["torchrun"] = {"returncode": None, "stderr": f"torchrun did not finish:\n{launched['error']}"}
    elif "result" in launched:
        record["torchrun"] = {"returncode": launched["result"].returncode, "stderr": launched["result"].stderr}
    return record


def results(record: dict, name: str) -> tuple[dict, SimpleNamespace, Path]:
    """Test `name`'s part of `run_all`'s record: its one-process results, the torchrun's
    result (returncode, stderr) and the file its rank 0 wrote. A preparation that failed
    fails the test with its traceback."""
    part = record[name]
    if "error" in part:
        pytest.fail(f"rank_steps.{name}: {part['error']}", pytrace=False)
    folder = Path(part["folder"])
    return torch.load(folder / SINGLE), SimpleNamespace(**record["torchrun"]), folder / OUTPUTS[name]


def reach_outcomes(record: dict) -> tuple[str, list[str]]:
    """The unreachable server's URL and what each rank raised when it checked it (the
    torchrun's standard error when a rank wrote nothing)."""
    folder = Path(record["reach"]["folder"])
    outcomes = [folder / f"rank{rank}.txt" for rank in range(2)]
    if not all(path.exists() for path in outcomes):
        stderr = record.get("torchrun", {}).get("stderr", "no torchrun ran: every batch's preparation failed")
        pytest.fail(f"a rank did not check the server; the torchrun's stderr:\n{stderr[-3000:]}", pytrace=False)
    return json.loads((folder / "servers.json").read_text())[0], [path.read_text() for path in outcomes]
