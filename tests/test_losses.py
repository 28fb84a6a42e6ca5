"""UEM losses on tiny cases whose values are worked out by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from uem.train.losses import (
    DomainClassifier,
    alpha,
    domain_adversarial_loss,
    grad_reverse,
    instance_nce,
    ipm,
    pair_nce,
    pairwise_d_distance,
    proto_nce,
    sel,
    sn2m,
    spr,
    update_bank,
    whiten_rows,
)


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def test_alpha_schedule():
    # E = 10: alpha(0) = 1/(1+e^5) = 1/149.413159 = 0.0066929; alpha(5) = 1/(1+e^0) = 0.5;
    # alpha(10) = 1/(1+e^-5) = 0.9933071
    assert alpha(0, 10) == pytest.approx(0.0066929, abs=1e-7)
    assert alpha(5, 10) == 0.5
    assert alpha(10, 10) == pytest.approx(0.9933071, abs=1e-7)


def test_update_bank_momentum_and_renormalise():
    # row 0: 0.99 (1,0) + 0.01 (0,1) = (0.99, 0.01), norm sqrt(0.9802) = 0.990051 -> (0.999949, 0.010100)
    bank = t([[1, 0], [0, 1]])
    update_bank(bank, torch.tensor([0]), t([[0, 1]]).requires_grad_())
    torch.testing.assert_close(bank, t([[0.999949, 0.010100], [0, 1]]), atol=1e-6, rtol=0)


def test_instance_and_prototype_nce_and_ipm():
    # logits [1, 0] (tau = 1), target 0: -ln(e / (e + 1)) = ln(1 + e^-1) = 0.313262
    f = t([[1, 0]])
    assert instance_nce(f, t([[1, 0], [0, 1]]), torch.tensor([0]), tau=1.0).item() == pytest.approx(0.313262, abs=1e-6)
    # same logits with the prototypes reversed and target 1
    protos, assign = t([[0, 1], [1, 0]]), torch.tensor([1])
    assert proto_nce(f, protos, assign, tau=1.0).item() == pytest.approx(0.313262, abs=1e-6)
    # IPM = INCE + 0.5 * PNCE = 1.5 * 0.313262 = 0.469893
    loss = ipm(f, t([[1, 0], [0, 1]]), torch.tensor([0]), protos, assign, weight=0.5, tau=1.0)
    assert loss.item() == pytest.approx(0.469893, abs=1e-6)
    # the IDSE stage takes its sum and its logged terms from ipm: the same numbers
    terms = {"ince": 1.0}
    again = ipm(f, t([[1, 0], [0, 1]]), torch.tensor([0]), protos, assign, weight=0.5, tau=1.0, terms=terms)
    assert again.item() == loss.item()
    assert terms == pytest.approx({"ince": 1.313262, "pnce": 0.313262}, abs=1e-6)


def test_d_distance_hand_vectors():
    # (1,0) vs (0,2): cos 0, ||.|| sqrt5 = 2.236068 -> 2.236068; (1,0) vs (0.6,0.8): 0.4 * 0.894427 = 0.357771
    # (1,0) vs (-3,0): cos -1, ||.|| 4 -> 8
    u = t([[1, 0], [1, 0]])
    torch.testing.assert_close(pairwise_d_distance(u[:1], t([[0, 2], [0.6, 0.8], [-3, 0]])),
                               t([[2.236068, 0.357771, 8.0]]), atol=1e-5, rtol=0)


def test_sel_two_prototypes():
    # p0 = (1,0), p1 = (0,1), tau = 1
    # f1 = (1,0):     logits 1, 0 -> w = 0.731059, 0.268941; d = 0 (1e-6 after the clamp), sqrt2
    #                 -> 0.268941 * 1.414214 = 0.380338
    # f2 = (0.6,0.8): logits 0.6, 0.8 -> w = 1/(1+e^0.2) = 0.450166, 0.549834; d = 0.894427, 0.632456
    #                 -> 0.450166*0.894427 + 0.549834*0.632456 = 0.402641 + 0.347745 = 0.750386
    # mean = (0.380338 + 0.750386) / 2 = 0.565362
    f = t([[1, 0], [0.6, 0.8]]).requires_grad_()
    loss = sel(f, t([[1, 0], [0, 1]]), tau=1.0)
    assert loss.item() == pytest.approx(0.565362, abs=2e-6)
    loss.backward()
    assert torch.isfinite(f.grad).all()  # f1 sits exactly on p0: no NaN from sqrt(0)


def test_spr_zero_when_unchanged_and_hand_value():
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(5, 8), dim=1).requires_grad_()
    loss = spr(f, f.detach().clone())
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    loss.backward()
    assert torch.isfinite(f.grad).all()
    # f = [(1,0), (0,1)], f' = [(1,0), (0.6,0.8)]
    # cos off-diagonal 0 vs 0.6 -> 2 * 0.36 = 0.72
    # dist off-diagonal sqrt2 = 1.414214 vs sqrt(0.16+0.64) = 0.894427 -> 2 * 0.519787^2 = 0.540356
    # diagonal: 0 for both; mean over 4 entries = (0.72 + 0.540356) / 4 = 0.315089
    g = t([[1, 0], [0, 1]]).requires_grad_()
    loss = spr(g, t([[1, 0], [0.6, 0.8]]))
    assert loss.item() == pytest.approx(0.315089, abs=2e-6)
    loss.backward()
    assert torch.isfinite(g.grad).all()


# -- SN2M ------------------------------------------------------------------------------------------
# A's prototypes a0 = (1,0), a1 = (0,1); B's unified set: u0 = (1,0) (a0 merged with a B prototype),
# u1 = (-1,0) (private to B), u2 = (0,1) (a1 translated, unmerged) -> tilde_index = [0, 2].
# B bank: m0 = (0.8,0.6), m1 = (-0.8,0.6).
PROTOS_A = t([[1, 0], [0, 1]])
TILDE = torch.tensor([0, 2])
UNIFIED_B = t([[1, 0], [-1, 0], [0, 1]])
BANK_B = t([[0.8, 0.6], [-0.8, 0.6]])
# x1 = (1,0): own a0 -> p~ = u0; nearest bank m0 (cos 0.8 vs -0.8); m0's nearest unified row u0
#   (cos 0.8, -0.8, 0.6) == p~ -> trusted, positives {u0, m0}.
# x2 = (-0.6,0.8): own a1 (cos -0.6 vs 0.8) -> p~ = u2; nearest bank m1 (cos 0 vs 0.96); m1's nearest
#   unified row u1 (cos -0.8, 0.8, 0.6) != u2 -> not trusted, positives {u2}.
X = t([[1, 0], [-0.6, 0.8]])


def test_sn2m_trust_switching_and_value():
    # tau = 1; candidates u0 u1 u2 m0 m1
    # x1 logits 1, -1, 0, 0.8, -0.8: all = e + e^-1 + 1 + e^0.8 + e^-0.8
    #   = 2.718282 + 0.367879 + 1 + 2.225541 + 0.449329 = 6.761031; pos = e + e^0.8 = 4.943823
    #   L1 = -ln(4.943823 / 6.761031) = 0.313040
    # x2 logits -0.6, 0.6, 0.8, 0, 0.96: all = 0.548812 + 1.822119 + 2.225541 + 1 + 2.611696 = 8.208168
    #   pos = e^0.8 = 2.225541 -> L2 = -ln(2.225541 / 8.208168) = 1.305128
    # mean = (0.313040 + 1.305128) / 2 = 0.809084
    loss, trusted = sn2m(X, PROTOS_A, TILDE, UNIFIED_B, BANK_B, tau=1.0)
    assert trusted.tolist() == [True, False]
    assert loss.item() == pytest.approx(0.809084, abs=2e-6)


def test_sn2m_plain_nn_always_trusts():
    # x2 now also has m1: pos = 2.225541 + 2.611696 = 4.837237 -> L2 = -ln(4.837237 / 8.208168) = 0.528785
    # mean = (0.313040 + 0.528785) / 2 = 0.420913
    f = X.clone().requires_grad_()
    loss, trusted = sn2m(f, PROTOS_A, TILDE, UNIFIED_B, BANK_B, tau=1.0, plain_nn=True)
    assert trusted.tolist() == [True, True]
    assert loss.item() == pytest.approx(0.420913, abs=2e-6)
    loss.backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


# -- adversarial part ------------------------------------------------------------------------------
def test_grad_reverse_flips_and_scales_the_gradient():
    x = t([[1, 2], [3, 4]]).requires_grad_()
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * t([[1, 1], [2, 2]])).sum().backward()
    torch.testing.assert_close(x.grad, t([[-0.5, -0.5], [-1, -1]]))


def test_domain_adversarial_loss_reverses_encoder_gradient_only():
    torch.manual_seed(0)
    clf = DomainClassifier(4, n_domains=3, hidden=8)
    f = torch.randn(6, 4)
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    grads = []
    for lam in (0.0, 1.0):  # lambda 0: no gradient reaches f; lambda 1: minus the plain gradient
        x = f.clone().requires_grad_()
        clf.zero_grad()
        loss = domain_adversarial_loss(x, ids, clf, lambda_=lam)
        loss.backward()
        grads.append((x.grad.clone(), clf.net[0].weight.grad.clone()))
    x = f.clone().requires_grad_()
    plain = torch.nn.functional.cross_entropy(clf(x), ids)
    plain.backward()
    assert torch.all(grads[0][0] == 0)
    torch.testing.assert_close(grads[1][0], -x.grad)
    torch.testing.assert_close(grads[0][1], grads[1][1])  # the classifier itself learns normally
    assert clf(f).shape == (6, 3)
    # cross-entropy at initial chance level is about ln 3 for 3 domains
    assert abs(loss.item() - math.log(3)) < 0.5


def test_pair_nce_hand_case():
    """Two anchors, three targets. Anchor 0 = target 0 exactly, partner 0: logits (1, 0, 0) / tau
    with tau = 1 -> -log(e / (e + 2)). Anchor 1 has no partner (-1): counts 0, and the mean is over
    both rows -> loss = -log(e / (e + 2)) / 2."""
    a = t([[1, 0, 0], [0, 1, 0]])
    targets = t([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    got = pair_nce(a, targets, torch.tensor([0, -1]), tau=1.0)
    assert got.item() == pytest.approx(-math.log(math.e / (math.e + 2)) / 2, rel=1e-6)
    # tau 0.5 doubles the logits: -log(e^2 / (e^2 + 2)) / 2
    assert pair_nce(a, targets, torch.tensor([0, -1]), tau=0.5).item() == pytest.approx(
        -math.log(math.e ** 2 / (math.e ** 2 + 2)) / 2, rel=1e-6)
    # nobody paired: exactly 0, and still a tensor that backward() accepts
    zero = pair_nce(a.requires_grad_(), targets, torch.tensor([-1, -1]), tau=1.0)
    assert zero.item() == 0.0


def test_whiten_rows_hand_case():
    """mean (1, 0), whitener diag(1, 2): (2, 1) -> (1, 2) / sqrt(5); (1, 3) -> (0, 6) / 6 = (0, 1)."""
    got = whiten_rows(t([[2, 1], [1, 3]]), t([1, 0]), t([[1, 0], [0, 2]]))
    assert torch.allclose(got, t([[1 / math.sqrt(5), 2 / math.sqrt(5)], [0, 1]]), atol=1e-6)
