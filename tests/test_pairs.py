"""Pair mining (uem.train.pairs) on constructed cases: two domains with a known one-to-one structure."""

from __future__ import annotations

import numpy as np

from uem.train.pairs import mine


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def two_domains(n: int = 60, dim: int = 16, seed: int = 0):
    """Domain b = domain a's items in a shuffled order, each moved by a domain-wide offset, its own
    stretch of the axes and a little noise: the true partner of a[i] is b[perm_inv[i]]."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim))
    perm = rng.permutation(n)
    stretch = np.linspace(0.5, 3.0, dim)
    b = a[perm] * stretch + 4.0 + 0.05 * rng.normal(size=(n, dim))
    truth = np.argsort(perm)  # a's item i sits at row truth[i] of b
    return unit(a), unit(b), truth


def test_mined_pairs_are_the_true_ones_and_inverse_of_each_other():
    a, b, truth = two_domains()
    mined = mine([a, b], shrinkage=0.1, k=5)
    i, j = mined.pairs(0, 1)
    assert len(i) >= 0.9 * len(a)  # nearly everything is found...
    assert np.array_equal(j, truth[i])  # ...and every mined pair is a true one
    back_i, back_j = mined.pairs(1, 0)
    assert np.array_equal(np.sort(back_j), np.sort(i)) and np.array_equal(mined.partner[(1, 0)][j], i)
    assert mined.counts() == {(0, 1): len(i)}


def test_whitening_is_what_finds_the_pairs_under_loud_domain_noise():
    """Domain b = a's items (shuffled), offset, plus loud item-wise noise on 3 of 16 axes (a style
    that varies a lot along directions that say nothing about the item). The whitening fitted on b
    itself damps those axes: nearly all mined pairs are true. Mined on the raw vectors (a huge
    shrinkage is almost no whitening, only the centring), the loud axes decide and about half are
    wrong (measured 20-29 true of 37-40, seeds 0-4)."""
    rng = np.random.default_rng(0)
    n, dim = 60, 16
    a = rng.normal(size=(n, dim))
    perm = rng.permutation(n)
    loud = np.zeros(dim)
    loud[:3] = 5.0
    b = a[perm] + 4.0 + rng.normal(size=(n, dim)) * loud + 0.05 * rng.normal(size=(n, dim))
    truth = np.argsort(perm)
    a, b = unit(a), unit(b)

    def true_and_mined(m):
        p = m.partner[(0, 1)]
        ok = p >= 0
        return int(np.sum(p[ok] == truth[ok])), int(ok.sum())

    good, mined = true_and_mined(mine([a, b], shrinkage=0.1, k=5))
    raw, raw_mined = true_and_mined(mine([a, b], shrinkage=1e4, k=5))
    assert mined >= 45 and good >= 0.95 * mined
    assert raw < 0.8 * raw_mined and raw < good - 15


def test_three_domains_every_ordered_pair_and_the_whitened_space():
    a, b, _ = two_domains(n=30, seed=2)
    c = unit(b[::-1] + 0.01)
    mined = mine([a, b, c], shrinkage=1.0, k=3)
    assert set(mined.partner) == {(d, e) for d in range(3) for e in range(3) if d != e}
    assert all(len(mined.partner[(d, e)]) == (len(a), len(b), len(c))[d] for d, e in mined.partner)
    w = mined.aligned[0]
    assert w.dtype == np.float32 and np.allclose(np.linalg.norm(w, axis=1), 1, atol=1e-5)


def test_a_domain_of_one_item_mines_at_most_one_pair():
    a, b, _ = two_domains(n=20, seed=3)
    mined = mine([a[:1], b], shrinkage=5.0, k=10)
    assert int(np.sum(mined.partner[(0, 1)] >= 0)) <= 1 and len(mined.partner[(1, 0)]) == len(b)
