"""Group advantages and DAPO's batch filters, against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lmgym.train.advantages import dynamic_sampling_mask, group_advantages

# Three groups of N=3 completions.
#   g0 = [1, 0, 0]  mean 1/3   centred [2/3, -1/3, -1/3]
#                   pop var ((2/3)^2 + 2 (1/3)^2) / 3 = (6/9)/3 = 2/9, std sqrt(2)/3
#   g1 = [2, 2, 2]  mean 2     centred [0, 0, 0]           std 0
#   g2 = [0, 1, 2]  mean 1     centred [-1, 0, 1]          pop var 2/3, std sqrt(2/3)
REWARDS = torch.tensor([[1.0, 0.0, 0.0], [2.0, 2.0, 2.0], [0.0, 1.0, 2.0]])
CENTRED = [[2 / 3, -1 / 3, -1 / 3], [0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]


def close(actual: torch.Tensor, expected, tol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=tol, rtol=tol)


def test_no_scale_is_mean_centred_only():
    close(group_advantages(REWARDS, scale="none"), CENTRED)


def test_group_scale_divides_by_each_groups_population_std():
    s0, s2 = math.sqrt(2) / 3, math.sqrt(2 / 3)
    expected = [
        [(2 / 3) / s0, (-1 / 3) / s0, (-1 / 3) / s0],  # [1.4142, -0.7071, -0.7071]
        [0.0, 0.0, 0.0],  # zero variance: 0 / (0 + eps) = 0, not NaN
        [-1 / s2, 0.0, 1 / s2],  # [-1.2247, 0, 1.2247]
    ]
    out = group_advantages(REWARDS)  # "group" is the default
    close(out, expected)
    assert torch.isfinite(out).all()


def test_group_scale_uses_population_not_sample_std():
    # [0, 1]: centred [-0.5, 0.5]; population std 0.5 -> [-1, 1].
    # (The sample std sqrt(0.5) = 0.7071 would give [-0.7071, 0.7071].)
    close(group_advantages(torch.tensor([[0.0, 1.0]])), [[-1.0, 1.0]])


def test_batch_scale_divides_by_the_std_of_all_rewards():
    # All 9 rewards [1,0,0, 2,2,2, 0,1,2]: sum 10, mean 10/9; sum of squares 18,
    # pop var 18/9 - (10/9)^2 = 2 - 100/81 = 62/81, std sqrt(62)/9 = 0.87489.
    std = math.sqrt(62) / 9
    expected = [[c / std for c in row] for row in CENTRED]  # still centred by the *group* mean
    close(group_advantages(REWARDS, scale="batch"), expected)


def test_eps_is_added_to_the_std():
    # [0, 1], std 0.5, eps 0.5: 0.5 / (0.5 + 0.5) = 0.5
    close(group_advantages(torch.tensor([[0.0, 1.0]]), eps=0.5), [[-0.5, 0.5]])


def test_integer_rewards_are_accepted():
    out = group_advantages(torch.tensor([[1, 0]]), scale="none")
    assert out.is_floating_point()
    close(out, [[0.5, -0.5]])


@pytest.mark.parametrize(
    ("rewards", "message"),
    [
        (torch.tensor([1.0, 0.0]), r"shape \(G, N\)"),
        (torch.zeros(2, 2, 2), r"shape \(G, N\)"),
        (torch.tensor([[1.0], [0.0]]), "group size must be at least 2, got 1"),
        (torch.zeros(0, 4), "at least one group"),
    ],
)
def test_bad_shapes_are_rejected(rewards, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(rewards)
    with pytest.raises(ValueError, match=message):
        dynamic_sampling_mask(rewards)


def test_unknown_scale_is_rejected():
    with pytest.raises(ValueError, match="scale must be one of"):
        group_advantages(REWARDS, scale="global")  # type: ignore[arg-type]


def test_dynamic_sampling_keeps_only_groups_with_different_rewards():
    rewards = torch.tensor(
        [
            [1.0, 1.0, 1.0],  # all right: no signal
            [0.0, 1.0, 0.0],  # keep
            [0.5, 0.5, 0.5],  # all the same partial credit: no signal
            [0.0, 0.0, 0.0],  # all wrong: no signal
            [0.3, 0.3, 0.3000001],  # a tiny difference still counts
        ]
    )
    mask = dynamic_sampling_mask(rewards)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [False, True, False, False, True]
    # Consistent with the advantages: dropped groups are exactly those with all-zero advantages.
    assert mask.tolist() == group_advantages(rewards).abs().amax(dim=1).gt(0).tolist()


@pytest.mark.parametrize("scale", ["group", "none", "batch"])
@pytest.mark.parametrize("value", [1.2, 0.2, 0.1, 1 / 3])
def test_a_group_of_equal_rewards_gets_exactly_zero_even_when_its_mean_rounds(scale, value):
    """Eight float32 1.2s have a mean that is not 1.2; divided by std + eps that error was +0.119
    per completion: an all-right group reinforced while the console said nothing was learnt."""
    rewards = torch.tensor([[value] * 8, [0.0, 1.0] * 4], dtype=torch.float32)
    advantages = group_advantages(rewards, scale=scale)
    assert torch.equal(advantages[0], torch.zeros(8))
    assert advantages[1].abs().min() > 0
