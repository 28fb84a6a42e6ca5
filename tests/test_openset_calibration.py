"""Export's label-free open-set calibration: Otsu's split and the per-pair contrast thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from uem.engine.openset import neighbourhood_contrast
from uem.engine.openset.base import top_cosines
from uem.engine.openset.contrast import contrast_calibration, otsu_threshold


def test_otsu_splits_two_groups_between_them():
    s = np.array([0.0, 0.1, 0.05, 1.0, 0.95, 0.9, 1.02])
    t = otsu_threshold(s, bins=64)
    assert 0.1 <= t < 0.9
    # unequal groups and a constant input
    rng = np.random.default_rng(0)
    s = np.concatenate([rng.normal(0, 0.05, 900), rng.normal(1, 0.05, 100)])
    assert 0.2 < otsu_threshold(s) < 0.8
    assert otsu_threshold([0.3, 0.3, 0.3]) == 0.3
    with pytest.raises(ValueError):
        otsu_threshold([np.nan])


def test_otsu_hand_computed_on_three_values():
    # {0, 0, 3} in bins [0,1) [1,2) [2,3]: splitting after bin 0 or bin 1 gives the same groups
    # (w0=2, w1=1, means 0.5 and 2.5 at bin centres), so the threshold is the middle of that gap: 1.5
    assert otsu_threshold([0.0, 0.0, 3.0], bins=3) == pytest.approx(1.5)
    # {0, 1, 1, 3} in bins of width 1: after bin 0 -> 1*3*(0.5-(1.5+1.5+2.5)/3)^2 = 5.33;
    # after bin 1 -> 3*1*((0.5+1.5+1.5)/3-2.5)^2 = 5.33; tie again -> edges 1 and 2 -> 1.5;
    # with 0 weighted twice, {0, 0, 1, 3}: after bin 0 -> 2*2*(0.5-2)^2 = 9, after bin 1 ->
    # 3*1*(2.5/3-2.5)^2 = 8.33 -> the threshold is edge 1
    assert otsu_threshold([0.0, 1.0, 1.0, 3.0], bins=3) == pytest.approx(1.5)
    assert otsu_threshold([0.0, 0.0, 1.0, 3.0], bins=3) == pytest.approx(1.0)


def test_top_cosines_exact_and_sorted():
    rng = np.random.default_rng(1)
    q, b = rng.normal(size=(7, 4)), rng.normal(size=(30, 4))
    got = top_cosines(q, b, 5, chunk=3)
    want = -np.sort(-(q @ b.T), axis=1)[:, :5]
    assert np.allclose(got, want)
    assert top_cosines(q, b[:2], 5).shape == (7, 2)


def _blobs(rng, centres, n=30, noise=0.05):
    x = np.concatenate([c + noise * rng.normal(size=(n, len(c))) for c in centres])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_calibration_separates_private_concepts():
    """Domain a has concepts 0, 1, 2; domain b only 0 and 1: a's concept-2 items must score above
    a->b's threshold and the shared ones below; b->a has no private concept to find."""
    rng = np.random.default_rng(0)
    eye = np.eye(8)
    shift = 0.3 * eye[7]                     # a domain gap, shared by every concept
    a = _blobs(rng, [eye[0], eye[1], eye[2]])
    b = _blobs(rng, [eye[0] + shift, eye[1] + shift])
    cal = contrast_calibration({"a": a, "b": b}, k=5)
    assert set(cal["thresholds"]) == {"a->b", "b->a"} and cal["k"] == 5 and cal["queries"]["a->b"] == 90
    score = neighbourhood_contrast(top_cosines(a, a, 6), top_cosines(a, b, 5), 5)
    rejected = score > cal["thresholds"]["a->b"]
    assert rejected[60:].all() and not rejected[:60].any()


def test_calibration_samples_large_domains_and_skips_degenerate_ones():
    rng = np.random.default_rng(2)
    a, b = _blobs(rng, [np.eye(4)[0]], n=50), _blobs(rng, [np.eye(4)[1]], n=1)
    cal = contrast_calibration({"a": a, "b": b, "c": np.zeros((0, 4), np.float32)}, max_queries=20, seed=3)
    assert set(cal["thresholds"]) == {"a->b"} and cal["queries"]["a->b"] == 20
    assert cal == contrast_calibration({"a": a, "b": b, "c": np.zeros((0, 4), np.float32)}, max_queries=20, seed=3)
