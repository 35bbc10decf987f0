"""GRPO-family losses against values worked out by hand.

The running example: B=2 completions padded to T=3 tokens.

    seq 0: 2 tokens, logprobs [-1.0, -2.0, pad], advantage A0 = +1.0
    seq 1: 3 tokens, logprobs [-0.5, -1.5, -3.0], advantage A1 = -0.5

so the batch has 5 tokens. Off-policy cases set old = logp - log(r) to get chosen ratios r.
dr_grpo's constant T is 3 unless a test says otherwise (`OPTIONS`).
"""

from __future__ import annotations

import math

import pytest
import torch

from lmgym.train.losses import LOSSES, LossOutput, cispo, dapo, dr_grpo, grpo, gspo

LOGP = [[-1.0, -2.0, 0.0], [-0.5, -1.5, -3.0]]
MASK = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
ADV = [1.0, -0.5]
NAN = float("nan")
OPTIONS = {"dr_grpo": {"length": 3}}  # the options a variant cannot do without


def call(name: str, *args, **kwargs) -> LossOutput:
    """LOSSES[name] with its required options (`OPTIONS`) unless the test gives them."""
    return LOSSES[name](*args, **{**OPTIONS.get(name, {}), **kwargs})


def batch(ratios=None, logp=LOGP):
    """(logprobs with grad, old_logprobs, advantages, mask); ratios[i][t] = exp(logp - old)."""
    logprobs = torch.tensor(logp, requires_grad=True)
    old = logprobs.detach().clone()
    if ratios is not None:
        old = old - torch.tensor(ratios).log()
    return logprobs, old, torch.tensor(ADV), torch.tensor(MASK)


def approx(x: float):
    return pytest.approx(x, rel=1e-5, abs=1e-6)


def grad_of(out: LossOutput, logprobs: torch.Tensor) -> list[list[float]]:
    out.loss.backward()
    assert logprobs.grad is not None and torch.isfinite(logprobs.grad).all()
    return logprobs.grad.tolist()


def assert_grad(actual: list[list[float]], expected: list[list[float]]) -> None:
    torch.testing.assert_close(torch.tensor(actual), torch.tensor(expected), atol=1e-6, rtol=1e-5)


# --- on-policy: every ratio is 1 ---------------------------------------------------------

# The clipped surrogate is A_i on every token, so the loss is minus the mean advantage
# under each variant's own normalisation:
#   grpo    per-sequence mean, then mean:  -(A0 + A1)/2               = -(1 - 0.5)/2           = -0.25
#   dr_grpo per-sequence sum / T=3:        -(2*A0/3 + 3*A1/3)/2       = -(2/3 - 1/2)/2         = -1/12
#   dapo    sum over tokens / 5 tokens:    -(2*A0 + 3*A1)/5           = -(2 - 1.5)/5           = -0.1
#   gspo    s_i = 1:                        -(A0 + A1)/2                                        = -0.25
#   cispo   -sum A_i logp_it / 5 = -(1*(-1) + 1*(-2) - 0.5*(-0.5) - 0.5*(-1.5) - 0.5*(-3))/5
#                                = -(-3 + 0.25 + 0.75 + 1.5)/5 = -(-0.5)/5                   = +0.1
ON_POLICY_LOSS = {"grpo": -0.25, "dr_grpo": -1 / 12, "dapo": -0.1, "gspo": -0.25, "cispo": 0.1}

# d loss / d logp_it, on-policy:
#   grpo, gspo: -A_i / |o_i| / B  -> seq 0: -1/2/2 = -0.25;      seq 1: 0.5/3/2 = 1/12
#     (gspo: d s_i/d logp_it = s_i/|o_i| = 1/|o_i|, same as grpo on-policy)
#   dr_grpo:    -A_i / T / B      -> seq 0: -1/3/2 = -1/6;       seq 1: 0.5/3/2 = 1/12
#   dapo, cispo: -A_i / 5         -> seq 0: -0.2;                seq 1: 0.1
ON_POLICY_GRAD = {
    "grpo": [[-0.25, -0.25, 0.0], [1 / 12, 1 / 12, 1 / 12]],
    "dr_grpo": [[-1 / 6, -1 / 6, 0.0], [1 / 12, 1 / 12, 1 / 12]],
    "dapo": [[-0.2, -0.2, 0.0], [0.1, 0.1, 0.1]],
    "gspo": [[-0.25, -0.25, 0.0], [1 / 12, 1 / 12, 1 / 12]],
    "cispo": [[-0.2, -0.2, 0.0], [0.1, 0.1, 0.1]],
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_on_policy_loss_is_minus_the_normalised_mean_advantage(name):
    logprobs, old, adv, mask = batch()
    out = call(name, logprobs, old, adv, mask)
    assert out.loss.ndim == 0
    assert out.loss.item() == approx(ON_POLICY_LOSS[name])
    assert out.clip_fraction == 0.0 and out.ratio_mean == approx(1.0) and out.kl == 0.0
    assert_grad(grad_of(out, logprobs), ON_POLICY_GRAD[name])


def test_registry_names_every_variant():
    assert LOSSES == {"grpo": grpo, "dr_grpo": dr_grpo, "dapo": dapo, "gspo": gspo, "cispo": cispo}


# --- clipping: per-token ratios -----------------------------------------------------------

# seq 0 (A=+1):   r = [1.5, 0.5]
# seq 1 (A=-0.5): r = [1.5, 0.5, 2.0]
RATIOS = [[1.5, 0.5, 1.0], [1.5, 0.5, 2.0]]


def test_grpo_clipping_binds_on_the_side_the_advantage_points():
    # eps 0.2: clip range [0.8, 1.2].
    # seq 0, A=+1:   r=1.5: min(1.5, 1.2) = 1.2    clip BINDS (A>0, r above 1+eps)
    #                r=0.5: min(0.5, 0.8) = 0.5    no (A>0, r below 1-eps is not clipped)
    # seq 1, A=-0.5: r=1.5: min(-0.75, -0.6) = -0.75  no (A<0, r above 1+eps is not clipped)
    #                r=0.5: min(-0.25, -0.4) = -0.4   clip BINDS (A<0, r below 1-eps)
    #                r=2.0: min(-1.0, -0.6)  = -1.0   no
    # per-sequence means: (1.2 + 0.5)/2 = 0.85;  (-0.75 - 0.4 - 1.0)/3 = -2.15/3
    # loss = -(0.85 - 2.15/3)/2 = -(2.55 - 2.15)/6 = -0.4/6 = -1/15
    logprobs, old, adv, mask = batch(RATIOS)
    out = grpo(logprobs, old, adv, mask)
    assert out.loss.item() == approx(-1 / 15)
    assert out.clip_fraction == approx(2 / 5)
    assert out.ratio_mean == approx((1.5 + 0.5 + 1.5 + 0.5 + 2.0) / 5)  # 1.2
    # Gradient: -(1/B)(1/|o_i|) A_i r_it where the clip does not bind, 0 where it does.
    #   seq 0: [0,  -(1/2)(1/2)(1)(0.5) = -0.125]
    #   seq 1: [-(1/2)(1/3)(-0.5)(1.5) = 0.125,  0,  -(1/2)(1/3)(-0.5)(2.0) = 1/6]
    assert_grad(grad_of(out, logprobs), [[0.0, -0.125, 0.0], [0.125, 0.0, 1 / 6]])


def test_dr_grpo_differs_from_grpo_only_in_the_length_normaliser():
    # Same surrogates as above; per-sequence sums divided by T=3:
    #   seq 0: (1.2 + 0.5)/3 = 1.7/3;  seq 1: -2.15/3
    # loss = -(1.7/3 - 2.15/3)/2 = 0.45/6 = 0.075   (grpo: -1/15 -- the sign even flips,
    # because the 3-token negative sequence now weighs 3/2 as much as the 2-token one)
    logprobs, old, adv, mask = batch(RATIOS)
    out = dr_grpo(logprobs, old, adv, mask, length=3)
    assert out.loss.item() == approx(0.075)
    assert out.clip_fraction == approx(2 / 5)
    # Gradient: -(1/B)(1/T) A_i r_it where not clipped.
    #   seq 0: [0, -(1/6)(0.5) = -1/12];  seq 1: [(1/6)(0.5)(1.5) = 0.125, 0, (1/6)(0.5)(2) = 1/6]
    assert_grad(grad_of(out, logprobs), [[0.0, -1 / 12, 0.0], [0.125, 0.0, 1 / 6]])


def test_dapo_is_token_level_with_a_higher_upper_clip():
    # eps_low 0.2, eps_high 0.28: clip range [0.8, 1.28].
    #   seq 0: r=1.5 -> 1.28 (binds), r=0.5 -> 0.5
    #   seq 1: -0.75, -0.4 (binds), -1.0
    # token-level: loss = -(1.28 + 0.5 - 0.75 - 0.4 - 1.0)/5 = -(-0.37)/5 = 0.074
    logprobs, old, adv, mask = batch(RATIOS)
    out = dapo(logprobs, old, adv, mask)
    assert out.loss.item() == approx(0.074)
    assert out.clip_fraction == approx(2 / 5)
    # Gradient: -A_i r_it / 5 where not clipped: seq 0: [0, -0.1]; seq 1: [0.15, 0, 0.2]
    assert_grad(grad_of(out, logprobs), [[0.0, -0.1, 0.0], [0.15, 0.0, 0.2]])


def test_clip_higher_lets_a_ratio_of_1_25_through():
    # One token, A=+1, r=1.25: grpo clips at 1.2, dapo (1.28) does not.
    logprobs = torch.tensor([[0.0]], requires_grad=True)
    old = torch.tensor([[-math.log(1.25)]])
    adv, mask = torch.tensor([1.0]), torch.tensor([[1.0]])
    assert grpo(logprobs, old, adv, mask).loss.item() == approx(-1.2)
    assert grpo(logprobs, old, adv, mask).clip_fraction == 1.0
    assert dapo(logprobs, old, adv, mask).loss.item() == approx(-1.25)
    assert dapo(logprobs, old, adv, mask).clip_fraction == 0.0


def test_grpo_and_dapo_agree_when_lengths_are_equal():
    # With equal lengths (and equal clip ranges) the per-sequence mean of means equals
    # the token mean, and dr_grpo's differs only by |o|/T.
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -1.5]], requires_grad=True)
    old = logprobs.detach() - torch.tensor([[0.1, -0.3], [0.05, 0.4]])
    adv, mask = torch.tensor([1.0, -0.5]), torch.ones(2, 2)
    g = grpo(logprobs, old, adv, mask).loss.item()
    assert dapo(logprobs, old, adv, mask, eps_high=0.2).loss.item() == approx(g)
    assert dr_grpo(logprobs, old, adv, mask, length=2).loss.item() == approx(g)  # |o| = T = 2


# --- GSPO: one ratio per sequence ---------------------------------------------------------

# log-ratios  seq 0: [0.2, -0.1]       -> mean 0.05,  s0 = exp(0.05) = 1.051271
#             seq 1: [0.3, 0.0, -0.6]  -> mean -0.1,  s1 = exp(-0.1) = 0.904837
# (s_i is the geometric mean of the token ratios: (e^0.2 e^-0.1)^(1/2) = e^0.05.)
GSPO_LOG_RATIOS = [[0.2, -0.1, 0.0], [0.3, 0.0, -0.6]]
S0, S1 = math.exp(0.05), math.exp(-0.1)


def gspo_batch():
    return batch([[math.exp(x) for x in row] for row in GSPO_LOG_RATIOS])


def test_gspo_sequence_ratio_without_clipping():
    # eps 0.2: both s inside [0.8, 1.2].  loss = -(s0*A0 + s1*A1)/2 = -(1.051271 - 0.452419)/2
    logprobs, old, adv, mask = gspo_batch()
    out = gspo(logprobs, old, adv, mask, eps_low=0.2, eps_high=0.2)
    assert out.loss.item() == approx(-(S0 * 1.0 + S1 * -0.5) / 2)  # -0.299426
    assert out.ratio_mean == approx((S0 + S1) / 2)  # over sequences, not tokens
    assert out.clip_fraction == 0.0
    # d loss/d logp_it = -(1/B) A_i s_i / |o_i|:  seq 0: -s0/4;  seq 1: 0.5 s1/6 = s1/12
    assert_grad(grad_of(out, logprobs), [[-S0 / 4, -S0 / 4, 0.0], [S1 / 12, S1 / 12, S1 / 12]])


def test_gspo_default_clip_is_tiny_and_sequence_level():
    # Default range [1 - 3e-4, 1 + 4e-4] = [0.9997, 1.0004].
    #   seq 0, A=+1:   s0 = 1.0513 > 1.0004 -> min(1.0513, 1.0004) = 1.0004           binds
    #   seq 1, A=-0.5: s1 = 0.9048 < 0.9997 -> min(-0.45242, -0.49985) = -0.49985      binds
    # loss = -(1.0004 - 0.49985)/2 = -0.250275; both sequences clipped, no gradient.
    logprobs, old, adv, mask = gspo_batch()
    out = gspo(logprobs, old, adv, mask)
    assert out.loss.item() == approx(-(1.0004 - 0.5 * 0.9997) / 2)
    assert out.clip_fraction == 1.0
    assert_grad(grad_of(out, logprobs), [[0.0] * 3, [0.0] * 3])


def test_gspo_clips_whole_sequences_where_grpo_clips_tokens():
    # grpo (eps 0.2, range [0.8, 1.2]) clips two tokens:
    #   seq 0, A>0: ratios [e^0.2, e^-0.1] = [1.2214, 0.9048] -> 1.2214 binds
    #   seq 1, A<0: ratios [e^0.3, 1, e^-0.6] = [1.3499, 1, 0.5488] -> 0.5488 binds
    # gspo with the same eps sees s0 = 1.0513 and s1 = 0.9048, both inside: clips nothing.
    logprobs, old, adv, mask = gspo_batch()
    assert grpo(logprobs, old, adv, mask).clip_fraction == approx(2 / 5)
    assert gspo(logprobs, old, adv, mask, eps_low=0.2, eps_high=0.2).clip_fraction == 0.0


# --- CISPO: clipped, detached IS weight on A * log pi ---------------------------------------


def test_cispo_gradient_is_capped_ratio_times_advantage_over_tokens():
    # ratios seq 0: [1.5, 8.0] -> weights [1.5, 5.0] (8 capped at cap = 5, the default)
    #        seq 1: [0.5, 1.0, 2.0] -> weights unchanged (no lower bound)
    # loss = -sum w A logp / 5
    #      = -(1.5*1*(-1) + 5*1*(-2) + 0.5*(-0.5)*(-0.5) + 1*(-0.5)*(-1.5) + 2*(-0.5)*(-3))/5
    #      = -(-1.5 - 10 + 0.125 + 0.75 + 3)/5 = 7.625/5 = 1.525
    logprobs, old, adv, mask = batch([[1.5, 8.0, 1.0], [0.5, 1.0, 2.0]])
    out = cispo(logprobs, old, adv, mask)
    assert out.loss.item() == approx(1.525)
    assert out.clip_fraction == approx(1 / 5)
    assert out.ratio_mean == approx((1.5 + 8.0 + 0.5 + 1.0 + 2.0) / 5)
    # Stop-gradient: d loss/d logp_it = -w_it A_i / 5 exactly, no d w/d logp term
    # (without the detach, token (0, 0) would get an extra -r A logp / 5 = +0.3).
    #   seq 0: [-1.5/5, -5/5] = [-0.3, -1.0]
    #   seq 1: [0.5*0.5/5, 1*0.5/5, 2*0.5/5] = [0.05, 0.1, 0.2]
    # Unlike PPO's clip, the capped token (0, 1) keeps a gradient.
    assert_grad(grad_of(out, logprobs), [[-0.3, -1.0, 0.0], [0.05, 0.1, 0.2]])


def test_cispo_cap_is_the_weight_itself_as_trls_epsilon_high():
    # TRL's cispo clamps the ratio at epsilon_high (5.0 in its docs), not at 1 + epsilon_high:
    # a ratio of 5.5 gets weight 5.0 with cap 5.0 (1 + 5 = 6 would let it through at 5.5).
    # One token, A = +1, logp = -2: loss = -w * A * logp = 2w; gradient -w.
    logprobs = torch.tensor([[-2.0]], requires_grad=True)
    old = logprobs.detach() - math.log(5.5)
    adv, mask = torch.tensor([1.0]), torch.tensor([[1.0]])
    out = cispo(logprobs, old, adv, mask, cap=5.0)
    assert out.loss.item() == approx(10.0)
    assert out.clip_fraction == 1.0
    assert_grad(grad_of(out, logprobs), [[-5.0]])
    assert cispo(logprobs, old, adv, mask, cap=6.0).loss.item() == approx(11.0)  # under the cap: weight 5.5


def test_cispo_clip_fraction_counts_only_tokens_above_the_cap():
    # cap 1.8: ratios [1.5, 0.01 | 1.9, 0.5, 1.7]. Only 1.9 is capped: a tiny ratio is never
    # raised (no lower bound), and 1.5 or 1.7, above any 1 + eps of PPO, are under the cap.
    # weights [1.5, 0.01 | 1.8, 0.5, 1.7]; gradient -w A / 5:
    #   seq 0: [-0.3, -0.002];  seq 1: [1.8*0.5/5, 0.5*0.5/5, 1.7*0.5/5] = [0.18, 0.05, 0.17]
    logprobs, old, adv, mask = batch([[1.5, 0.01, 1.0], [1.9, 0.5, 1.7]])
    out = cispo(logprobs, old, adv, mask, cap=1.8)
    assert out.clip_fraction == approx(1 / 5)
    assert_grad(grad_of(out, logprobs), [[-0.3, -0.002, 0.0], [0.18, 0.05, 0.17]])


# --- KL to a reference: k3 ----------------------------------------------------------------


def k3(d: float) -> float:
    return math.exp(d) - d - 1


# d = ref - logp:  seq 0: [0.5, -0.5];  seq 1: [0.0, 1.0, -1.0]
#   k3(0.5) = e^0.5 - 1.5 = 0.148721   k3(-0.5) = e^-0.5 - 0.5 = 0.106531
#   k3(0) = 0                          k3(1) = e - 2 = 0.718282      k3(-1) = e^-1 = 0.367879
KL_D = [[0.5, -0.5, 0.0], [0.0, 1.0, -1.0]]
K = [[k3(0.5), k3(-0.5)], [0.0, k3(1.0), k3(-1.0)]]
KL_TOKEN_MEAN = (sum(K[0]) + sum(K[1])) / 5  # 0.268283
KL_SEQUENCE_MEAN = (sum(K[0]) / 2 + sum(K[1]) / 3) / 2  # grpo, gspo
KL_CONSTANT_LENGTH = (sum(K[0]) / 3 + sum(K[1]) / 3) / 2  # dr_grpo, T=3
KL_TERM = {
    "grpo": KL_SEQUENCE_MEAN,
    "gspo": KL_SEQUENCE_MEAN,
    "dr_grpo": KL_CONSTANT_LENGTH,
    "dapo": KL_TOKEN_MEAN,
    "cispo": KL_TOKEN_MEAN,
}


def test_k3_values_by_hand():
    assert k3(0.5) == pytest.approx(0.148721, abs=1e-6)
    assert k3(1.0) == pytest.approx(0.718282, abs=1e-6)
    assert k3(-1.0) == pytest.approx(0.367879, abs=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_kl_penalty_is_beta_times_k3_with_the_variants_normalisation(name):
    logprobs, old, adv, mask = batch()
    ref = logprobs.detach() + torch.tensor(KL_D)
    out = call(name, logprobs, old, adv, mask, ref_logprobs=ref, beta=0.1)
    assert out.kl == approx(KL_TOKEN_MEAN)  # the logged stat is always the token mean
    assert out.loss.item() == approx(ON_POLICY_LOSS[name] + 0.1 * KL_TERM[name])
    # d k3/d logp = 1 - exp(d): the KL part of the gradient pulls logp towards ref.
    grad = torch.tensor(grad_of(out, logprobs))
    assert torch.isfinite(grad).all()


def test_kl_gradient_by_hand_for_dapo():
    # dapo: loss = -(token mean of A) + beta * (token mean of k3); d k3/d logp = 1 - e^d
    #   token (1, 1): d = 1 -> on-policy 0.1 + 0.1 * (1 - e)/5 = 0.1 - 0.0343656 = 0.0656344
    logprobs, old, adv, mask = batch()
    ref = logprobs.detach() + torch.tensor(KL_D)
    grad = grad_of(dapo(logprobs, old, adv, mask, ref_logprobs=ref, beta=0.1), logprobs)
    assert grad[1][1] == approx(0.1 + 0.1 * (1 - math.e) / 5)
    assert grad[0][0] == approx(-0.2 + 0.1 * (1 - math.exp(0.5)) / 5)


def test_beta_without_reference_is_an_error():
    logprobs, old, adv, mask = batch()
    with pytest.raises(ValueError, match="needs ref_logprobs"):
        grpo(logprobs, old, adv, mask, beta=0.1)


# --- masked positions change nothing --------------------------------------------------------


def garbage_batch(pad_logp: float, pad_old: float, pad_ref: float, ratios=RATIOS):
    logprobs, old, adv, mask = batch(ratios)
    ref = logprobs.detach() + torch.tensor(KL_D)
    with torch.no_grad():
        logprobs[0, 2] = pad_logp
    old[0, 2], ref[0, 2] = pad_old, pad_ref
    return logprobs, old, adv, mask, ref


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(
    ("pad_logp", "pad_old", "pad_ref"),
    [(-math.inf, -math.inf, -math.inf), (1e9, -1e9, 1e9), (NAN, NAN, NAN), (-math.inf, 1e9, NAN)],
)
def test_garbage_at_masked_positions_changes_nothing(name, pad_logp, pad_old, pad_ref):
    clean = garbage_batch(0.0, 0.0, 0.0)
    dirty = garbage_batch(pad_logp, pad_old, pad_ref)
    a = call(name, *clean[:4], ref_logprobs=clean[4], beta=0.1)
    b = call(name, *dirty[:4], ref_logprobs=dirty[4], beta=0.1)
    assert math.isfinite(b.loss.item())
    assert b.loss.item() == a.loss.item()
    assert (b.clip_fraction, b.kl, b.ratio_mean) == (a.clip_fraction, a.kl, a.ratio_mean)
    grad_a, grad_b = grad_of(a, clean[0]), grad_of(b, dirty[0])
    assert grad_b == grad_a
    assert grad_b[0][2] == 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_an_all_padding_row_changes_nothing(name):
    logprobs, old, adv, mask = batch(RATIOS)
    ref = logprobs.detach() + torch.tensor(KL_D)
    a = call(name, logprobs, old, adv, mask, ref_logprobs=ref, beta=0.1)
    pad = torch.full((1, 3), -math.inf)
    b = call(name, 
        torch.cat([logprobs, pad]),
        torch.cat([old, pad]),
        torch.cat([adv, torch.tensor([5.0])]),
        torch.cat([mask, torch.zeros(1, 3)]),
        ref_logprobs=torch.cat([ref, pad]),
        beta=0.1,
    )
    assert b.loss.item() == approx(a.loss.item())
    assert (b.clip_fraction, b.kl, b.ratio_mean) == (
        approx(a.clip_fraction),
        approx(a.kl),
        approx(a.ratio_mean),
    )


def pad_columns(tensor: torch.Tensor, n: int, value: float) -> torch.Tensor:
    return torch.cat([tensor, torch.full((tensor.shape[0], n), value)], 1)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_thirty_padding_columns_change_neither_loss_nor_gradient(name):
    # One long prompt or completion elsewhere in a step pads every row: that must not
    # change any token's weight (it used to scale dr_grpo's loss by 3/33).
    logprobs, old, adv, mask = batch(RATIOS)
    ref = logprobs.detach() + torch.tensor(KL_D)
    a = call(name, logprobs, old, adv, mask, ref_logprobs=ref, beta=0.1)
    wide = pad_columns(logprobs.detach(), 30, -math.inf).requires_grad_()
    b = call(name, wide, pad_columns(old, 30, -math.inf), adv, pad_columns(mask, 30, 0.0),
             ref_logprobs=pad_columns(ref, 30, -math.inf), beta=0.1)
    assert b.loss.item() == approx(a.loss.item())
    grad_a, grad_b = grad_of(a, logprobs), grad_of(b, wide)
    assert_grad([row[:3] for row in grad_b], grad_a)
    assert all(g == 0.0 for row in grad_b for g in row[3:])


def test_dr_grpo_divides_by_completions_times_the_constant_length():
    # TRL's dr_grpo: sum of every token term / (batch size * max_completion_length).
    # Surrogates (clip 0.2, see the grpo test): seq 0: 1.2 + 0.5 = 1.7; seq 1: -0.75 - 0.4 - 1.0 = -2.15
    # KL (beta 0.1): sum of k3 over the 5 tokens; T = 4 while the batch is 3 wide.
    logprobs, old, adv, mask = batch(RATIOS)
    ref = logprobs.detach() + torch.tensor(KL_D)
    out = dr_grpo(logprobs, old, adv, mask, length=4, ref_logprobs=ref, beta=0.1)
    kl_sum = sum(K[0]) + sum(K[1])
    assert out.loss.item() == approx(-(1.7 - 2.15) / (2 * 4) + 0.1 * kl_sum / (2 * 4))
    # Policy gradient -A_i r_it / (B T) where the clip does not bind, 1/8 here, plus the
    # KL's beta (1 - e^d) / (B T):
    #   seq 0: [0 + kl, -0.5/8 + kl];  seq 1: [0.5*1.5/8 + kl, 0 + kl, 0.5*2/8 + kl]
    policy = [[0.0, -0.5 / 8, 0.0], [0.75 / 8, 0.0, 1.0 / 8]]
    kl = [[0.1 * (1 - math.exp(d)) / 8 * m for d, m in zip(row_d, row_m)] for row_d, row_m in zip(KL_D, MASK)]
    assert_grad(grad_of(out, logprobs), [[p + k for p, k in zip(rp, rk)] for rp, rk in zip(policy, kl)])


def test_dr_grpo_micro_batches_of_their_own_width_sum_to_the_whole_batch():
    # As the trainer (and each rank) does: every part weighed by its share of the
    # completions, each padded only to its own longest row. seq 0 alone is 2 wide.
    logprobs, old, adv, mask = batch(RATIOS)
    whole = dr_grpo(logprobs, old, adv, mask, length=5)
    whole_grad = grad_of(whole, logprobs)
    first = logprobs.detach()[:1, :2].clone().requires_grad_()
    second = logprobs.detach()[1:].clone().requires_grad_()
    part_a = dr_grpo(first, old[:1, :2], adv[:1], mask[:1, :2], length=5)
    part_b = dr_grpo(second, old[1:], adv[1:], mask[1:], length=5)
    assert (part_a.loss * 0.5 + part_b.loss * 0.5).item() == approx(whole.loss.item())
    (part_a.loss * 0.5 + part_b.loss * 0.5).backward()
    assert_grad([first.grad[0].tolist() + [0.0], second.grad[0].tolist()], whole_grad)


def test_dr_grpo_needs_a_positive_length():
    logprobs, old, adv, mask = batch()
    with pytest.raises(ValueError, match="length T must be positive"):
        dr_grpo(logprobs, old, adv, mask, length=0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bool_mask_equals_float_mask_and_low_precision_inputs_work(name):
    logprobs, old, adv, mask = batch(RATIOS)
    a = call(name, logprobs, old, adv, mask).loss
    b = call(name, logprobs, old, adv, mask.bool()).loss
    assert b.item() == a.item()
    low = logprobs.detach().bfloat16().requires_grad_()
    c = call(name, low, old.bfloat16(), adv.bfloat16(), mask.bool())
    assert c.loss.dtype == torch.float32
    c.loss.backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_stay_finite_for_extreme_ratios(name):
    # log-ratios of +-30 (ratios ~1e13 and ~1e-13) on real tokens.
    logprobs, old, adv, mask = batch([[math.exp(30), math.exp(-30), 1.0], [math.exp(-30), math.exp(30), 1.0]])
    out = call(name, logprobs, old, adv, mask)
    assert math.isfinite(out.loss.item())
    grad_of(out, logprobs)  # asserts finite


# --- input checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"logprobs": torch.zeros(3)}, r"logprobs must have shape \(B, T\)"),
        ({"old_logprobs": torch.zeros(2, 4)}, "old_logprobs must have the shape"),
        ({"mask": torch.ones(2, 2)}, "mask must have the shape"),
        ({"advantages": torch.zeros(2, 1)}, r"advantages must have shape \(B,\)"),
        ({"advantages": torch.zeros(3)}, r"advantages must have shape \(B,\)"),
        ({"ref_logprobs": torch.zeros(3, 3)}, "ref_logprobs must have the shape"),
        ({"mask": torch.full((2, 3), 0.5)}, "mask must hold only 0 and 1"),
    ],
)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bad_inputs_are_rejected(name, change, message):
    logprobs, old, adv, mask = batch()
    args = {"logprobs": logprobs, "old_logprobs": old, "advantages": adv, "mask": mask, "ref_logprobs": None}
    args.update(change)
    ref = args.pop("ref_logprobs")
    with pytest.raises(ValueError, match=message):
        call(name, *args.values(), ref_logprobs=ref)
