"""Sharded data parallelism (`trainer.strategy = "fsdp"`): two processes, each holding half
of every weight and half a batch, make the update one process makes with the whole batch,
for full fine-tuning and LoRA; and what FSDP cannot train is refused with one message."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from rank_steps import RUNS, results  # noqa: E402
from train_setups import CONFIG, SMALL  # noqa: E402

from lmgym.errors import UsageError  # noqa: E402
from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.fsdp import decoder_layers, require_shardable  # noqa: E402
from lmgym.train.launch import require_enough_prompts  # noqa: E402
from lmgym.train.models import load_model  # noqa: E402

# (weights, clipped gradient relative to its largest entry, gradient norm relative): bfloat16
# rounds a half batch's matmuls differently from the whole one's, so it agrees to bfloat16's
# precision; a mean taken for a sum would still be off by a factor of 2
BOUNDS = {"grpo-bf16": (5e-3, 1e-2, 1e-3)}
FLOAT32 = (1e-5, 1e-4, 1e-5)


def test_two_sharded_processes_with_half_the_batch_make_the_same_update(rank_step_runs):
    single, result, fsdp_weights = results(rank_step_runs, "fsdp")  # prepared by rank_steps.fsdp
    assert result.returncode == 0, result.stderr[-3000:]
    fsdp = torch.load(fsdp_weights)
    for name in RUNS:
        weights_bound, grad_bound, norm_bound = BOUNDS.get(name, FLOAT32)
        assert single[name].keys() == fsdp[name].keys()
        worst = max(float((single[name][n] - fsdp[name][n]).abs().max()) for n in single[name])
        print(f"{name}: largest difference between 2 FSDP processes and 1: {worst:.1e}")
        assert worst < weights_bound, f"{name}: two sharded processes differ from one by {worst}"
        norms = single[f"grad_norm/{name}"], fsdp[f"grad_norm/{name}"]
        print(f"{name}: gradient norm, 1 process {norms[0]:.6f}, 2 FSDP processes {norms[1]:.6f}")
        assert norms[1] == pytest.approx(norms[0], rel=norm_bound)
        grads = single[f"grad/{name}"]
        assert grads.keys() == fsdp[f"grad/{name}"].keys()
        scale = max(float(g.abs().max()) for g in grads.values())
        gap = max(float((grads[n] - fsdp[f"grad/{name}"][n]).abs().max()) for n in grads) / scale
        print(f"{name}: largest difference of the clipped gradient, relative to its largest entry: {gap:.1e}")
        assert gap < grad_bound, f"{name}: the clipped gradients differ by {gap} of their largest entry"


def test_a_model_without_decoder_layers_is_refused_for_fsdp():
    with pytest.raises(UsageError, match="no decoder layers found in Sequential"):
        decoder_layers(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)))
    model, _ = load_model("tiny-llama")
    assert [type(m).__name__ for m in decoder_layers(model)] == ["LlamaDecoderLayer"] * model.config.num_hidden_layers


def test_what_fsdp_cannot_train_is_refused_before_the_first_step(tmp_path):
    model, _ = load_model("tiny-llama")
    with pytest.raises(UsageError, match="float16"):
        require_shardable(load_config(CONFIG, [*SMALL, "model.dtype=float16"]), model)
    with pytest.raises(UsageError, match="asynchronous generation"):
        require_shardable(load_config(CONFIG, [*SMALL, "algorithm.max_off_policy_steps=1"]), model)
    require_shardable(load_config(CONFIG, [*SMALL, "model.dtype=bfloat16"]), model)


def test_more_processes_than_prompts_is_one_clear_message():
    with pytest.raises(UsageError, match="8 training processes for algorithm.prompts_per_step = 4.*at most 4"):
        require_enough_prompts(4, 8)
    with pytest.raises(UsageError, match="divisible"):
        require_enough_prompts(6, 4)
    require_enough_prompts(4, 2)
