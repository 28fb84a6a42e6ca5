"""uem.engine.geometry: UEM's distance D, unit rows, best-first top n; and the torch twins of D in
uem.train.losses agreeing with it. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uem.engine.geometry import (pairwise_euclidean, pairwise_uem_distance, top_n, uem_distance,
                                 uem_distance_from_cos, unit_rows)

S2 = math.sqrt(2.0)


# -- D ---------------------------------------------------------------------------------------------
def test_uem_distance_hand_vectors():
    # u=(1,0), v=(0,1): cos 0, ||u-v|| = sqrt2 -> D = 1 * sqrt2
    assert uem_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(S2)
    # u=(1,0), v=(-1,0): cos -1, ||u-v|| = 2 -> D = 2 * 2 = 4
    assert uem_distance([1.0, 0.0], [-1.0, 0.0]) == pytest.approx(4.0)
    # equal vectors: cos 1, distance 0 -> 0
    assert uem_distance([0.3, 0.4], [0.3, 0.4]) == pytest.approx(0.0, abs=1e-12)
    # u=(1,0), v=(0,2): cos 0, ||u-v|| = sqrt5 = 2.236068 -> D = 2.236068 (lengths count, not only angles)
    assert uem_distance([1.0, 0.0], [0.0, 2.0]) == pytest.approx(2.236068, abs=1e-6)
    # a zero vector has cosine 0 to everything: D(0, (3,4)) = 1 * 5
    assert uem_distance([0.0, 0.0], [3.0, 4.0]) == pytest.approx(5.0)


def test_uem_distance_is_row_wise():
    # rows: ((1,0),(0,1)) -> sqrt2; ((1,0),(0.6,0.8)) -> (1-0.6) * sqrt(0.16+0.64) = 0.4 * 0.894427
    d = uem_distance([[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.6, 0.8]])
    np.testing.assert_allclose(d, [S2, 0.357771], atol=1e-6)


def test_pairwise_uem_distance_hand_vectors():
    # u=(1,0), v=(0,2): cos = 0, ||u-v|| = sqrt(1+4) = 2.236068 -> D = 1 * 2.236068
    # u=(1,0), v=(0.6,0.8): cos = 0.6, ||u-v|| = sqrt(0.16+0.64) = 0.894427 -> D = 0.4*0.894427 = 0.357771
    # u=(1,0), v=(-3,0): cos = -1, ||u-v|| = 4 -> D = 2 * 4 = 8
    d = pairwise_uem_distance(np.array([[1.0, 0.0]]), np.array([[0.0, 2.0], [0.6, 0.8], [-3.0, 0.0]]))
    np.testing.assert_allclose(d, [[2.236068, 0.357771, 8.0]], atol=1e-6)


def test_pairwise_matches_row_wise_and_from_cos():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(4, 7))
    want = np.array([[uem_distance(x, y) for y in b] for x in a])
    np.testing.assert_allclose(pairwise_uem_distance(a, b), want, rtol=1e-9, atol=1e-12)
    ua, ub = unit_rows(a, np.float64), unit_rows(b, np.float64)
    from_cos = np.array([[uem_distance_from_cos(float(x @ y)) for y in ub] for x in ua])
    np.testing.assert_allclose(pairwise_uem_distance(ua, ub), from_cos, atol=1e-9)


def test_uem_distance_from_cos_ends_and_clipping():
    # cos 0: 1 * sqrt2; cos 1: 0; cos -1: 2 * 2 = 4; out-of-range cosines (rounding) are clipped
    assert uem_distance_from_cos(0.0) == pytest.approx(S2)
    assert uem_distance_from_cos(1.0) == 0.0
    assert uem_distance_from_cos(-1.0) == pytest.approx(4.0)
    assert uem_distance_from_cos(1.0000001) == 0.0
    assert uem_distance_from_cos(-1.5) == pytest.approx(4.0)


def test_pairwise_euclidean_hand_vectors():
    # (0,0)-(3,4) = 5, (0,0)-(1,1) = sqrt2, (1,1)-(3,4) = |(2,3)| = sqrt13 = 3.605551,
    # (1,1)-(1,1) = 0 exactly (the clamp at 0 keeps rounding from going negative)
    d = pairwise_euclidean(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[3.0, 4.0], [1.0, 1.0]]))
    np.testing.assert_allclose(d, [[5.0, S2], [3.605551, 0.0]], atol=1e-6)
    assert d[1, 1] == 0.0


# -- unit rows -------------------------------------------------------------------------------------
def test_unit_rows_hand_values():
    # (3,4) / 5 = (0.6, 0.8); (0, 2) / 2 = (0, 1); a zero row stays zero
    out = unit_rows(np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]]))
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]], atol=1e-7)


def test_unit_rows_keeps_unit_rows_bit_identical():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    once = unit_rows(x)
    assert np.array_equal(once.view(np.uint32), x.view(np.uint32))  # all unit: nothing divided again
    mixed = np.concatenate([x[:3], 2.0 * x[3:4]])                    # one row not unit
    out = unit_rows(mixed)
    assert np.array_equal(out[:3].view(np.uint32), x[:3].view(np.uint32))
    np.testing.assert_allclose(out[3], x[3], atol=1e-6)
    assert np.array_equal(unit_rows(out).view(np.uint32), out.view(np.uint32))  # idempotent


def test_unit_rows_zero_rows_and_dtype():
    with pytest.raises(ValueError, match="zero length"):
        unit_rows(np.array([[1.0, 0.0], [0.0, 0.0]]), allow_zero=False)
    out = unit_rows(np.array([[0.0, 3.0]]), np.float64)
    assert out.dtype == np.float64 and out.tolist() == [[0.0, 1.0]]
    # float64 rows made unit in float32 are off by ~1e-8: divided again in float64
    x32 = unit_rows(np.array([[1.0, 2.0, 3.0]])).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(unit_rows(x32, np.float64)), 1.0, atol=1e-15)
    # one vector is one row
    np.testing.assert_allclose(unit_rows(np.array([0.0, 5.0])), [0.0, 1.0])


# -- top n -----------------------------------------------------------------------------------------
def test_top_n_hand_rows():
    s = np.array([[0.1, 0.9, 0.5, 0.7],
                  [0.4, 0.2, 0.8, 0.6]], np.float32)
    idx, val = top_n(s, 3)
    assert idx.dtype == np.int64
    assert idx.tolist() == [[1, 3, 2], [2, 3, 0]]
    np.testing.assert_allclose(val, [[0.9, 0.7, 0.5], [0.8, 0.6, 0.4]])
    assert val.dtype == np.float32


def test_top_n_clips_n_and_takes_one_row():
    s = np.array([0.3, -1.0, 2.0])
    idx, val = top_n(s, 10)                   # n clipped to the row length
    assert idx.tolist() == [2, 0, 1] and val.tolist() == [2.0, 0.3, -1.0]
    idx, val = top_n(np.ones((2, 3)), 0)     # nothing asked: empty columns, one row per query
    assert idx.shape == (2, 0) and val.shape == (2, 0)
    idx, val = top_n(np.zeros((2, 0)), 5)    # nothing to choose from
    assert idx.shape == (2, 0)


def test_top_n_agrees_with_a_full_sort():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(20, 300))
    idx, val = top_n(s, 7)
    want = np.argsort(-s, axis=1)[:, :7]
    assert np.array_equal(idx, want)
    assert np.array_equal(val, np.take_along_axis(s, want, 1))


def test_top_n_ranks_nan_last():
    idx, _ = top_n(np.array([np.nan, 0.5, 0.1]), 2)
    assert idx.tolist() == [1, 2]


# -- the torch twins in training -------------------------------------------------------------------
def test_torch_twins_agree_with_geometry():
    torch = pytest.importorskip("torch")
    from uem.train import losses

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(9, 12)), rng.normal(size=(6, 12))
    ta, tb = torch.as_tensor(a), torch.as_tensor(b)
    np.testing.assert_allclose(losses.pairwise_d_distance(ta, tb).numpy(), pairwise_uem_distance(a, b),
                               rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(losses.pairwise_euclidean(ta, tb).numpy(), pairwise_euclidean(a, b),
                               rtol=1e-9, atol=1e-9)
