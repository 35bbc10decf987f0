"""Dr. GRPO's normaliser is a constant of the run, so two processes make the update one
process makes even when their halves of the batch pad to different widths (it used to
be each rank's own padded width)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rank_steps import results  # noqa: E402


def test_two_processes_whose_halves_pad_differently_make_the_same_dr_grpo_update(rank_step_runs):
    # rank_steps.dr_grpo: rank 1 gets the odd samples, one of them followed by 30 environment
    # tokens (mask 0, as a tool result after the reply), so rank 1 pads 30 columns wider than rank 0
    single, result, ddp_weights = results(rank_step_runs, "dr_grpo")
    assert result.returncode == 0, result.stderr[-3000:]
    ddp = torch.load(ddp_weights)["dr_grpo"]
    worst = max(float((single[n] - ddp[n]).abs().max()) for n in single)
    assert worst < 1e-5, f"two processes differ from one by {worst}"
