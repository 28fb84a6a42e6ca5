"""Prototypes of UEM stage 1: K estimate, spherical k-means, translation, Hungarian pairing + merge
rule, radius, the runtime graph. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from uem.engine.prototypes import PrototypeGraph
from uem.train.prototypes import (
    build_prototype_graph,
    cluster,
    domain_prototypes,
    estimate_k,
    knee,
    match_domains,
    ordered_match,
    pair_and_merge,
    radius,
    translate,
)

S2 = np.sqrt(2.0)


def blobs(centers: np.ndarray, per: int, noise: float, rng, shift=None) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `centers` (+ an optional domain shift); returns (x, which blob)."""
    which = np.repeat(np.arange(len(centers)), per)
    x = centers[which] + noise * rng.normal(size=(len(which), centers.shape[1]))
    if shift is not None:
        x = x + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True), which


def unit_rows(n: int, d: int, rng) -> np.ndarray:
    c = rng.normal(size=(n, d))
    return c / np.linalg.norm(c, axis=1, keepdims=True)


# -- translation (D itself: tests/test_geometry.py) -----------------------------------------------
def test_translate_adds_mean_difference():
    # [1, 0] + ((0.2, 0.1) - (0.0, 0.3)) = [1.2, -0.2]
    out = translate(np.array([[1.0, 0.0]]), np.array([0.2, 0.1]), np.array([0.0, 0.3]))
    np.testing.assert_allclose(out, [[1.2, -0.2]])


def test_radius_two_by_two():
    # A: (1,0), (0,1); B: (0.6,0.8), (0.8,-0.6)
    # D((1,0),(0.6,0.8))  = (1-0.6) * sqrt(0.16+0.64) = 0.4 * 0.894427 = 0.357771
    # D((1,0),(0.8,-0.6)) = (1-0.8) * sqrt(0.04+0.36) = 0.2 * 0.632456 = 0.126491
    # D((0,1),(0.6,0.8))  = (1-0.8) * sqrt(0.36+0.04) = 0.126491
    # D((0,1),(0.8,-0.6)) = (1+0.6) * sqrt(0.64+2.56) = 1.6 * 1.788854 = 2.862167  <- the largest
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[0.6, 0.8], [0.8, -0.6]])
    assert radius(a, b) == pytest.approx(2.862167, abs=1e-6)
    assert radius(a, b, block=1) == pytest.approx(2.862167, abs=1e-6)  # blockwise gives the same
    assert radius(a, b[:0]) == 0.0


# -- Hungarian pairing and the merge rule ----------------------------------------------------------
def test_pairing_where_nothing_merges():
    # A: a0=(1,0), a1=(0.6,0.8); B: b0=(-1,0), b1=(-0.6,-0.8); equal means -> no translation.
    # cost: a0-b0 = 2, a0-b1 = sqrt(1.6^2+0.8^2) = 1.788854, a1-b0 = 1.788854, a1-b1 = 2
    # Hungarian: (0,1)+(1,0) = 3.577709 < (0,0)+(1,1) = 4  -> pairs (0,1), (1,0)
    # threshold = min(||a0-a1||, ||b0-b1||) = min(0.894427, 0.894427) = 0.894427; 1.788854 > it: no merge
    a = np.array([[1.0, 0.0], [0.6, 0.8]])
    b = np.array([[-1.0, 0.0], [-0.6, -0.8]])
    zero = np.zeros(2)
    m = pair_and_merge(a, b, zero, zero)
    assert m.pairs.tolist() == [[0, 1], [1, 0]]
    np.testing.assert_allclose(m.distance, [1.788854, 1.788854], atol=1e-6)
    np.testing.assert_allclose(m.threshold, [0.894427, 0.894427], atol=1e-6)
    assert not m.merged.any() and len(m.merged_pairs) == 0
    # unified A = A's two + B's two translated (no shift) = 4 rows; p~ of b0 is row 2, of b1 row 3
    np.testing.assert_allclose(m.unified_a, np.concatenate([a, b]), atol=1e-6)
    assert m.b_to_a.tolist() == [2, 3] and m.a_to_b.tolist() == [2, 3]


def _partial_case():
    # A: a0=(1,0), a1=(0.6,0.8), a2=(-1,0); B: b0=(0,-1), b1=(1,0); mean_A=(0,0), mean_B=(0.1,0)
    a = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0]])
    b = np.array([[0.0, -1.0], [1.0, 0.0]])
    return a, b, np.zeros(2), np.array([0.1, 0.0])


def test_pairing_where_some_merge_global_rule():
    # B in A: b + (mean_A - mean_B) = b - (0.1, 0): b0'=(-0.1,-1), b1'=(0.9,0)
    # cost a0: b0' sqrt(1.21+1)=1.486607, b1' 0.1
    #      a1: b0' sqrt(0.49+3.24)=1.931321, b1' sqrt(0.09+0.64)=0.854400
    #      a2: b0' sqrt(0.81+1)=1.345362, b1' 1.9
    # best assignment of b0, b1 to distinct A's: a0-b1 + a2-b0 = 0.1 + 1.345362 = 1.445362
    #   (next: a0-b1 + a1-b0 = 2.031321, a1-b1 + a2-b0 = 2.199762); a1 stays unpaired.
    # gaps: A: ||a0-a1|| = sqrt(0.8) = 0.894427 (smallest), B: sqrt2 -> threshold 0.894427
    # (0,1): 0.1 < 0.894 merges; (2,0): 1.345 > 0.894 does not.
    a, b, ma, mb = _partial_case()
    m = pair_and_merge(a, b, ma, mb, rule="global")
    assert m.pairs.tolist() == [[0, 1], [2, 0]]
    np.testing.assert_allclose(m.distance, [0.1, 1.345362], atol=1e-6)
    np.testing.assert_allclose(m.threshold, [0.894427, 0.894427], atol=1e-6)
    assert m.merged.tolist() == [True, False]
    assert m.merged_pairs.tolist() == [[0, 1]]
    # unified A: row0 = unit((1,0)+(0.9,0))/2 = (1,0); rows 1, 2 = a1, a2; row 3 = unit(b0') =
    #   (-0.1,-1)/sqrt(1.01) = (-0.099504, -0.995037). p~ of b0 -> row 3, of b1 -> row 0 (merged).
    np.testing.assert_allclose(m.unified_a, [[1, 0], [0.6, 0.8], [-1, 0], [-0.099504, -0.995037]], atol=1e-6)
    assert m.b_to_a.tolist() == [3, 0]
    # unified B (A moved by +0.1 in x): row0 = b0, row1 = unit(((1,0)+(1.1,0))/2) = (1,0),
    #   row2 = unit(0.7,0.8) = (0.658505, 0.752577), row3 = unit(-0.9,0) = (-1,0); p~ of a0,a1,a2 = 1,2,3
    np.testing.assert_allclose(m.unified_b, [[0, -1], [1, 0], [0.658505, 0.752577], [-1, 0]], atol=1e-6)
    assert m.a_to_b.tolist() == [1, 2, 3]
    # the ordered views the trainer uses
    ab = m.ordered(True)
    assert ab.partner.tolist() == [1, -1, 0] and ab.merged.tolist() == [True, False, False]
    np.testing.assert_allclose(ab.p_tilde[1], [0.658505, 0.752577], atol=1e-6)
    ba = m.ordered(False)
    assert ba.partner.tolist() == [2, 0] and ba.merged.tolist() == [False, True]
    assert ba.tilde_index.tolist() == [3, 0] and ba.own_unified is m.unified_b


def test_local_rule_is_per_pair():
    # same case; local threshold(i, j) = min(gap_A(i), gap_B(j))
    # (0,1): min(0.894427, sqrt2) = 0.894427 -> 0.1 merges
    # (2,0): gap_A(a2) = min(||a2-a0||=2, ||a2-a1||=sqrt(2.56+0.64)=1.788854) = 1.788854, gap_B = 1.414214
    #        -> threshold 1.414214 and 1.345362 < it: merges too (the global rule said no)
    a, b, ma, mb = _partial_case()
    m = pair_and_merge(a, b, ma, mb, rule="local")
    np.testing.assert_allclose(m.threshold, [0.894427, S2], atol=1e-6)
    assert m.merged.tolist() == [True, True]
    assert pair_and_merge(a, b, ma, mb, merge=False).merged.tolist() == [False, False]
    with pytest.raises(ValueError):
        pair_and_merge(a, b, ma, mb, rule="nearest")


# -- K estimate and clustering ---------------------------------------------------------------------
def test_knee_hand_curve():
    # ks 2,4,8,16 -> x = (k-2)/14 = 0, 0.1429, 0.4286, 1; inertia 100,20,15,12 -> y = (I-12)/88 = 1, .0909, .0341, 0
    # below chord (1-x) - y = 0, 0.8571-0.0909 = 0.7662, 0.5714-0.0341 = 0.5373, 0 -> knee at k = 4
    assert knee([2, 4, 8, 16], [100, 20, 15, 12]) == 4
    # ks 2,4,8,16 with inertia 100,95,80,0: y = 1, .95, .8, 0; (1-x) - y = 0, -.093, -.229, 0 -> no
    # point below the chord (a concave curve has no elbow) -> smallest k
    assert knee([2, 4, 8, 16], [100, 95, 80, 0]) == 2
    assert knee([2, 4, 8], [5, 5, 5]) == 2  # flat: no elbow -> smallest k


def test_estimate_k_recovers_six_blobs():
    rng = np.random.default_rng(0)
    x, _ = blobs(unit_rows(6, 16, rng), per=60, noise=0.05, rng=rng)
    assert estimate_k(x, k_min=2, k_max=16, seed=1) == 6


def test_cluster_is_spherical_kmeans():
    rng = np.random.default_rng(1)
    x, which = blobs(unit_rows(3, 8, rng), per=30, noise=0.05, rng=rng)
    c, assign = cluster(3.0 * x, 3, seed=0)  # scale does not matter: rows are normalised first
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(assign, np.argmax(x @ c.T, axis=1))
    # each blob lands in exactly one cluster, and distinct blobs in distinct clusters
    per_blob = [set(assign[which == i].tolist()) for i in range(3)]
    assert all(len(s) == 1 for s in per_blob) and len(set.union(*per_blob)) == 3


# -- the runtime graph -----------------------------------------------------------------------------
def _three_domains():
    """5 concepts shared by 3 domains plus one private concept each, every domain shifted.

    Shared concept i: unit(e_i + 0.8 e_15), i < 5 -> two shared ones are sqrt2/sqrt(1.64) = 1.104 apart,
    the smallest gap inside a domain. Privates e_5, e_6, e_7: sqrt2 = 1.414 from each other, so the
    Hungarian pair of two privates (about 1.41 apart) fails the merge bar (about 1.10); shared
    concepts land about 0.2 apart after translation and merge.
    """
    rng = np.random.default_rng(7)
    eye = np.eye(16)
    centers = np.concatenate([(eye[:5] + 0.8 * eye[15]) / np.sqrt(1.64), eye[5:8]])
    data, which = {}, {}
    for d, private in zip(("x", "y", "z"), (5, 6, 7)):
        own = centers[[0, 1, 2, 3, 4, private]]
        shift = 0.15 * unit_rows(1, 16, rng)[0]
        data[d], w = blobs(own, per=25, noise=0.04, rng=rng, shift=shift)
        which[d] = np.array([0, 1, 2, 3, 4, private])[w]
    return data, which


def test_build_prototype_graph_links_shared_blobs_only():
    data, which = _three_domains()
    g = build_prototype_graph(data, k=6, seed=3, rule="global")  # the local bar links privates here too
    assert isinstance(g, PrototypeGraph) and g.domains == ["x", "y", "z"]
    assert g.centroids.shape == (18, 16) and g.owner.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    np.testing.assert_allclose(np.linalg.norm(g.centroids, axis=1), 1.0, atol=1e-5)
    # name each prototype by the blob closest to it (test-side knowledge only)
    concept = []
    for d in g.domains:
        for c in g.centroids[g.of_domain(d)]:
            members = data[d] @ c
            concept.append(int(np.bincount(which[d][members > 0.9]).argmax()))
    linked = sorted((concept[a], concept[b]) for a, b in g.links.tolist())
    # 3 domain pairs x 5 shared concepts, each link joining a concept with itself; privates unlinked
    assert linked == sorted([(c, c) for c in range(5)] * 3)
    assert np.all(g.radius > 0) and np.all(np.isfinite(g.radius))
    g.validate()
    none = build_prototype_graph(data, k=6, seed=3, merge=False)
    assert len(none.links) == 0 and len(none.radius) == 0


def test_graph_k_estimated_and_per_domain():
    data, _ = _three_domains()
    two = {d: data[d] for d in ("x", "y")}
    g = build_prototype_graph(two, k={"x": 6, "y": 4}, seed=3)
    assert len(g.of_domain("x")) == 6 and len(g.of_domain("y")) == 4
    est = build_prototype_graph(two, k=None, seed=3, k_min=2, k_max=12)
    assert len(est.of_domain("x")) == 6 and len(est.of_domain("y")) == 6


def test_match_domains_every_unordered_pair():
    data, _ = _three_domains()
    protos = {d: domain_prototypes(x, 6, seed=3) for d, x in data.items()}
    matches = match_domains(protos, rule="global")
    assert list(matches) == [("x", "y"), ("x", "z"), ("y", "z")]
    for m in matches.values():
        assert m.merged.sum() == 5
    zx, xz = ordered_match(matches, "z", "x"), matches[("x", "z")]
    assert zx.own_unified is xz.unified_b and zx.tilde_index is xz.b_to_a
    assert ordered_match(matches, "x", "z").partner.tolist() == [
        dict(xz.pairs.tolist()).get(i, -1) for i in range(6)]


def test_tiny_and_duplicated_domains():
    # 3 vectors per domain, two of them identical: at most 2 distinct prototypes, graph still valid
    x = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    assert estimate_k(x) == 1  # k range clipped to distinct rows - 1 = 1
    c, assign = cluster(x, 3, seed=0)
    assert len(c) == 2 and assign[0] == assign[1] != assign[2]
    g = build_prototype_graph({"x": x, "y": y}, k=3, seed=0)
    # x prototypes e1, e2; y prototypes e2, e3; means (2/3,1/3,0) and (0,1/3,2/3)
    # y in x: + (2/3, 0, -2/3) -> e2' = (2/3,1,-2/3), e3' = (2/3,0,1/3)
    # cost e1-e2' = sqrt(1/9+1+4/9) = 1.247, e1-e3' = sqrt(1/9+1/9) = 0.471,
    #      e2-e2' = sqrt(4/9+4/9) = 0.943,   e2-e3' = sqrt(4/9+1+1/9) = 1.247
    # Hungarian: (e1,e3') + (e2,e2') = 1.414; bar = sqrt2 = 1.414 (both domains) -> both pairs merge
    assert len(g.of_domain("x")) == 2 and len(g.of_domain("y")) == 2
    assert len(g.links) == 2
    xi, yi = g.of_domain("x"), g.of_domain("y")
    pairs = {(tuple(np.round(g.centroids[a])), tuple(np.round(g.centroids[b]))) for a, b in g.links.tolist()}
    assert set(g.links[:, 0].tolist()) <= set(xi.tolist()) and set(g.links[:, 1].tolist()) <= set(yi.tolist())
    assert pairs == {((1, 0, 0), (0, 0, 1)), ((0, 1, 0), (0, 1, 0))}
