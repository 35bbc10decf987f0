"""Importance-sampling corrections against hand-computed values, and their effect in every loss."""

from __future__ import annotations

import math

import pytest
import torch

from lmgym.train.importance import masked_is, mismatch_kl, truncated_is
from lmgym.train.losses import LOSSES

MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
PROXIMAL = torch.log(torch.tensor([[0.5, 0.9, 0.2, 0.3], [0.4, 0.1, 0.7, 0.7]]))
SAMPLER = torch.log(torch.tensor([[0.5, 0.3, 0.8, 1e-9], [0.1, 0.1, 0.7, 0.7]]))
# ratios pi_old / mu on masked-in tokens: [1, 3, 0.25], [4, 1]


def test_truncated_is_caps_large_ratios():
    out = truncated_is(PROXIMAL, SAMPLER, MASK, cap=2.0)
    expected = torch.tensor([[1.0, 2.0, 0.25, 0.0], [2.0, 1.0, 0.0, 0.0]])
    assert torch.allclose(out.weights, expected, atol=1e-6)
    assert out.capped_fraction == pytest.approx(2 / 5)
    assert out.weight_mean == pytest.approx((1 + 2 + 0.25 + 2 + 1) / 5)


def test_masked_is_drops_tokens_outside_the_band():
    out = masked_is(PROXIMAL, SAMPLER, MASK, cap=2.0)
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # 3, 1/4 and 4 are outside [1/2, 2]
    assert torch.equal(out.weights, expected) and out.capped_fraction == pytest.approx(3 / 5)


def test_mismatch_kl_is_zero_for_identical_policies_and_k3_otherwise():
    assert mismatch_kl(PROXIMAL, PROXIMAL, MASK) == pytest.approx(0.0, abs=1e-7)
    ratios = [1, 3, 0.25, 4, 1]
    expected = sum(r - math.log(r) - 1 for r in ratios) / 5
    assert mismatch_kl(PROXIMAL, SAMPLER, MASK) == pytest.approx(expected, rel=1e-5)


def loss_and_grad(name, is_weights=None):
    torch.manual_seed(0)
    logprobs = torch.log(torch.rand(2, 4) * 0.8 + 0.1).requires_grad_(True)
    old = logprobs.detach() + torch.randn(2, 4) * 0.05
    advantages = torch.tensor([1.0, -0.5])
    run_constants = {"length": MASK.shape[1]} if name == "dr_grpo" else {}  # Dr. GRPO's T
    out = LOSSES[name](logprobs, old, advantages, MASK, is_weights=is_weights, **run_constants)
    out.loss.backward()
    return out.loss.detach(), logprobs.grad


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_unit_weights_change_nothing_and_scaling_scales_the_policy_term(name):
    plain_loss, plain_grad = loss_and_grad(name)
    ones_loss, ones_grad = loss_and_grad(name, torch.ones(2, 4))
    assert torch.allclose(plain_loss, ones_loss) and torch.allclose(plain_grad, ones_grad)
    double_loss, double_grad = loss_and_grad(name, torch.full((2, 4), 2.0))
    assert torch.allclose(double_loss, 2 * plain_loss, atol=1e-6) and torch.allclose(double_grad, 2 * plain_grad, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"gspo"}))
def test_a_zero_weight_removes_a_tokens_gradient(name):
    weights = torch.ones(2, 4)
    weights[0, 1] = 0.0
    _, grad = loss_and_grad(name, weights)
    _, plain = loss_and_grad(name)
    assert grad[0, 1] == 0.0 and plain[0, 1] != 0.0
    assert torch.allclose(grad[1], plain[1])  # other completions untouched


def test_weights_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="is_weights must have the shape"):
        loss_and_grad("grpo", torch.ones(2, 3))
