"""Dr. GRPO's normaliser is a constant of the run, so two processes make the update one
process makes even when their halves of the batch pad to different widths (it used to
be each rank's own padded width)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from paths import FIXTURES
from train_setups import CONFIG, SMALL, torchrun  # noqa: E402

from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.metrics import NullSink  # noqa: E402
from lmgym.train.session import build_loop  # noqa: E402
from lmgym.train.tokens import TokenSample  # noqa: E402

WORKER = FIXTURES / "ddp_step.py"  # one trainer step on this rank's half


def test_two_processes_whose_halves_pad_differently_make_the_same_dr_grpo_update(tmp_path):
    overrides = [*SMALL, "trainer.lr=1e-2", "sampling.temperature=1.0", "trainer.max_grad_norm=1e9"]
    config = load_config(CONFIG, [*overrides, "algorithm.loss=dr_grpo"])
    batch = build_loop(config, tmp_path / "gen", NullSink()).orchestrator.next_batch(0)
    # Rank 1 gets the odd samples: one of them is followed by 30 environment tokens (mask 0,
    # as a tool result after the reply), so rank 1 pads 30 columns wider than rank 0.
    long = batch.samples[1]
    batch.samples[1] = TokenSample(long.input_ids + long.input_ids[-1:] * 30, long.loss_mask + [0] * 30,
                                   long.sampler_logprobs + [0.0] * 30)
    assert sum(a != 0 for a in batch.advantages[0::2]) and sum(a != 0 for a in batch.advantages[1::2])
    saved = tmp_path / "batch.pt"
    torch.save({"batch": batch, "config": str(CONFIG), "overrides": overrides, "losses": ["dr_grpo"]}, saved)

    one = build_loop(config, tmp_path / "one", NullSink())
    initial = {n: p.detach().clone() for n, p in one.model.named_parameters()}
    one.trainer.step(batch)
    single = {n: p.detach().clone() for n, p in one.model.named_parameters()}
    assert any(not torch.equal(initial[n], single[n]) for n in initial)

    result = torchrun(2, str(WORKER), str(saved))
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp_weights.pt")["dr_grpo"]
    worst = max(float((single[n] - ddp[n]).abs().max()) for n in single)
    assert worst < 1e-5, f"two processes differ from one by {worst}"
