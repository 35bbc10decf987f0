"""The GRPO trainer on the CPU: it learns, it resumes exactly, it stops on NaN, LoRA works."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from train_setups import CONFIG, small_config  # noqa: E402

from lmgym.train.config import load_config  # noqa: E402
from lmgym.train.metrics import NullSink  # noqa: E402
from lmgym.train.session import build_loop, train  # noqa: E402
from lmgym.train.trainer import TrainingError, lr_factor  # noqa: E402


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_lr_schedule_hand_values():
    assert [lr_factor(s, 2, 10, "constant") for s in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_factor(6, 2, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(10, 2, 10, "cosine") == pytest.approx(0.0)


@pytest.mark.parametrize("variant", [[], ["model.lora.enabled=true", "sft.warm_start=true", "sft.max_steps=3"]], ids=["full", "lora+sft"])
def test_resume_from_checkpoint_equals_an_uninterrupted_run(tmp_path, variant):
    straight = small_config(tmp_path / "a", "trainer.max_steps=4", "checkpoint.every=2", *variant)
    train(straight, tmp_path / "a", sink=NullSink())
    expected = params(build_loop(straight, tmp_path / "a", NullSink(), resume=True).model)

    first = small_config(tmp_path / "b", "trainer.max_steps=2", "checkpoint.every=2", *variant)
    train(first, tmp_path / "b", sink=NullSink())
    resumed = small_config(tmp_path / "b", "trainer.max_steps=4", "checkpoint.every=2", *variant)
    loop = build_loop(resumed, tmp_path / "b", NullSink(), resume=True)
    assert loop.step == 2
    loop.run()
    got = params(loop.model)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[n], expected[n]) for n in got)
    # and training changed the weights at all (the test could otherwise pass vacuously)
    fresh = params(build_loop(small_config(tmp_path / "c", *variant), tmp_path / "c", NullSink()).model)
    assert any(not torch.equal(got[n], fresh[n]) for n in got)


def test_nan_loss_stops_naming_the_step_and_checkpoint(tmp_path):
    config = small_config(tmp_path, "trainer.max_steps=1", "checkpoint.every=1")
    loop = build_loop(config, tmp_path, NullSink())
    loop.run()
    saved = loop.last_checkpoint
    assert saved is not None and saved.exists()
    batch = loop.orchestrator.next_batch(loop.step)
    batch.advantages = torch.full_like(batch.advantages, float("nan"))  # as from a diverged reward
    with pytest.raises(TrainingError, match=rf"nan at step 2; last checkpoint: {saved}"):
        loop.train_on(batch)
    assert saved.exists()


def test_lora_trains_only_the_adapter_and_uses_the_base_as_reference(tmp_path):
    config = small_config(tmp_path, "model.lora.enabled=true", "model.lora.r=4", "algorithm.beta=0.1", "trainer.max_steps=2", "trainer.lr=1e-2")
    loop = build_loop(config, tmp_path, NullSink())
    before = params(loop.model)
    metrics = loop.run()
    after = params(loop.model)
    changed = {n for n in after if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed)
    assert metrics["kl"] > 0  # the adapter moved the policy away from the base


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "dapo", "gspo", "cispo"])
def test_every_loss_variant_runs_a_step(tmp_path, loss):
    config = small_config(tmp_path, f"algorithm.loss={loss}", "trainer.max_steps=1", "algorithm.num_iterations=2")
    loop = build_loop(config, tmp_path, NullSink())
    before = params(loop.model)
    metrics = loop.run()
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(before[n], p) for n, p in params(loop.model).items())


def test_learning_reverse_digits(tmp_path):
    """SFT warm start to a modest accuracy, then GRPO raises held-out exact match clearly."""
    config = load_config(CONFIG, [
        f"logging.output_dir={tmp_path}", "logging.console_every=0", "trainer.max_steps=60",
        "eval.every=60", "eval.num_examples=200", "checkpoint.every=0",
    ])
    train(config, tmp_path)
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if "eval/exact_match" in e]
    before, after = evals[0]["eval/exact_match"], evals[-1]["eval/exact_match"]
    assert (evals[0]["step"], evals[-1]["step"]) == (0, 60)
    assert before < 0.8 and after >= before + 0.15 and after >= 0.8, (before, after)
    assert (tmp_path / "final" / "config.json").exists()


@pytest.mark.parametrize("loss", ["grpo", "dr_grpo", "dapo", "gspo", "cispo"])
def test_micro_batches_windows_and_skipped_samples_keep_the_full_batch_gradient(tmp_path, loss):
    """The trainer's savings (logit window, zero-advantage skipping, micro-batches) must
    give the gradient of the plain loss over the whole batch."""
    from lmgym.train.losses import LOSSES
    from lmgym.train.tokens import pad_batch
    from lmgym.train.trainer import token_logprobs

    config = small_config(tmp_path, f"algorithm.loss={loss}", "trainer.micro_batch_size=4", "trainer.max_grad_norm=1e9")
    loop = build_loop(config, tmp_path, NullSink())
    trainer = loop.trainer
    batch = loop.orchestrator.next_batch(loop.step)
    batch.advantages[::3] = 0.0  # some skippable
    batch.advantages[1] = 0.75
    t = pad_batch(batch.samples, loop.orchestrator.engine.sampler.pad_id)
    logprobs = token_logprobs(trainer.model, t["input_ids"], t["attention_mask"], config.sampling.temperature)
    mask = t["loss_mask"][:, 1:]
    LOSSES[loss](logprobs, logprobs.detach(), batch.advantages, mask, **trainer.loss_kwargs).loss.backward()
    expected = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.model.zero_grad(set_to_none=True)
    trainer.optimizer.step = lambda: None  # keep the gradient for inspection
    metrics = trainer.step(batch)
    assert metrics["samples_skipped_zero_advantage"] > 0
    for name, p in trainer.model.named_parameters():
        assert torch.allclose(p.grad, expected[name], atol=1e-6, rtol=1e-4), name


def step_gradient(trainer, batch) -> dict[str, torch.Tensor]:
    """The gradient one trainer step leaves (the optimiser step is skipped to keep it)."""
    trainer.optimizer.step = lambda: None
    trainer.step(batch)
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters()}


def test_dr_grpo_gradient_ignores_padding_from_a_long_masked_out_sample(tmp_path):
    """A truncated rollout masked out of the loss (algorithm.mask_truncated) still pads the
    batch; 30 more columns must not shrink every other token's gradient."""
    from lmgym.train.tokens import TokenSample

    config = small_config(tmp_path, "algorithm.loss=dr_grpo", "trainer.max_grad_norm=1e9")
    loop = build_loop(config, tmp_path, NullSink())
    trainer = loop.trainer
    batch = loop.orchestrator.next_batch(loop.step)
    assert trainer.loss_kwargs["length"] == config.sampling.max_tokens
    plain = step_gradient(trainer, batch)
    long = max(batch.samples, key=lambda s: len(s.input_ids))
    ids = long.input_ids + long.input_ids[-1:] * 30
    masked_out = TokenSample(ids, [0] * len(ids), [0.0] * len(ids), truncated=True)
    padded = type(batch)([*batch.samples, masked_out], [*batch.advantages, 1.0], dict(batch.metrics))
    trainer.model.zero_grad(set_to_none=True)
    wide = step_gradient(trainer, padded)
    assert any(float(g.abs().max()) > 0 for g in plain.values())
    for name, grad in plain.items():
        assert torch.allclose(wide[name], grad, atol=1e-7, rtol=1e-4), name


def test_loss_options_come_from_the_algorithm_section(tmp_path):
    from lmgym.train.trainer import loss_options

    assert loss_options(small_config(tmp_path, "algorithm.loss=dr_grpo", "sampling.max_tokens=12")) == {"length": 12}
    assert loss_options(small_config(tmp_path, "algorithm.loss=dr_grpo", "algorithm.dr_grpo_length=1024", "algorithm.eps_high=0.3")) == {
        "length": 1024, "eps_high": 0.3}
    assert loss_options(small_config(tmp_path, "algorithm.loss=cispo")) == {"cap": 5.0}
    assert loss_options(small_config(tmp_path, "algorithm.loss=cispo", "algorithm.cispo_cap=2.5")) == {"cap": 2.5}
    assert loss_options(small_config(tmp_path, "algorithm.loss=dapo")) == {}
