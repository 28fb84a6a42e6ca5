"""Per-domain alignment, pair maps and CSLS ranking (uem.engine.align, uem.export.align), and the
bundle and engine paths that use them."""

import numpy as np
import pytest

from uem.engine.align import (Alignment, CslsParams, csls_item_stats, fit_domains, fit_whitener, learn_map,
                              mutual_csls_pairs, pair_score_matrix)
from uem.engine.csls import csls_scores, mean_top_k
from uem.engine.geometry import unit_rows
from uem.export.align import AlignConfig, fit_alignment


def _blobs(n=120, dim=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim))


@pytest.mark.parametrize("kind", ["mean", "whiten"])
def test_a_shifted_scaled_copy_aligns_onto_the_original(kind):
    # B = 3 A + offset: its mean is 3 mean_A + offset and (whitening) its covariance 9 C_A, so the
    # shrinkage (a fraction of the mean eigenvalue) scales by 9 too and W_B = W_A / 3: identical rows
    a = _blobs()
    b = 3.0 * a + np.linspace(10, 20, a.shape[1])  # far enough that even the nearest mean tells them apart
    al = fit_domains({"a": a, "b": b}, kind, shrinkage=0.1)
    np.testing.assert_allclose(al.align(a, "a"), al.align(b, "b"), atol=1e-5)
    assert al.infer_source(a[:10]) == ["a"] * 10 and al.infer_source(b[:10]) == ["b"] * 10


def test_whitener_is_the_inverse_square_root_of_the_shrunk_covariance():
    x = _blobs(n=40, dim=6, seed=1)
    c = np.cov(x.T)
    alpha = 0.2 * np.trace(c) / 6
    w = fit_whitener(x, 0.2)
    np.testing.assert_allclose(w @ (c + alpha * np.eye(6)) @ w, np.eye(6), atol=1e-8)
    # fewer rows than dimensions: still symmetric positive definite, unspanned directions at alpha^-1/2
    few = x[:3]
    w3 = fit_whitener(few, 0.2)
    ev = np.linalg.eigvalsh(w3)
    assert np.allclose(w3, w3.T) and ev.min() > 0


def test_mean_top_k_and_csls_by_hand():
    sims = np.array([[0.9, 0.5, 0.1], [0.2, np.nan, 0.8]])
    np.testing.assert_allclose(mean_top_k(sims, 2), [0.7, 0.5])  # (0.9+0.5)/2; NaN skipped: (0.8+0.2)/2
    np.testing.assert_allclose(mean_top_k(sims, 5), [0.5, 0.5])  # fewer than k: the mean of what there is
    cos = np.array([[0.9, 0.8], [0.3, 0.6]])
    # 2 cos - r_q - r_t with r_q = (0.5, 0.2), r_t = (0.7, 0.1)
    np.testing.assert_allclose(csls_scores(cos, [0.5, 0.2], [0.7, 0.1]),
                               [[1.8 - 0.5 - 0.7, 1.6 - 0.5 - 0.1], [0.6 - 0.2 - 0.7, 1.2 - 0.2 - 0.1]])


def test_csls_demotes_a_hub():
    # target item 0 is close to every query (a hub): cosine gives it to all three; CSLS gives
    # queries 1 and 2 their own nearest non-hub item
    q = unit_rows(np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.8, 0.0, 0.6]]))
    t = unit_rows(np.array([[1.0, 0.45, 0.45], [0.5, 0.9, -0.3], [0.1, 0.1, 1.0]]))
    al = Alignment(csls=CslsParams(k=2, candidates=3))
    cos = pair_score_matrix(Alignment(), q, "a", "b", t)
    csls = pair_score_matrix(al, q, "a", "b", t)
    assert list(np.argmax(cos, axis=1)) == [0, 0, 0] and list(np.argmax(csls, axis=1)) == [0, 1, 2]
    # by hand: r_q1 = mean of q1's 2 best cosines; r_t = each item's 2 best cosines to the queries
    cq = q @ t.T
    r_q = np.sort(cq, axis=1)[:, -2:].mean(1)
    r_t = np.sort(cq.T, axis=1)[:, -2:].mean(1)
    np.testing.assert_allclose(csls, 2 * cq - r_q[:, None] - r_t[None, :], atol=1e-6)


def test_self_learned_map_recovers_a_rotation():
    rng = np.random.default_rng(4)
    a = unit_rows(rng.standard_normal((300, 8)))
    theta = 0.35
    rot = np.eye(8)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    rot[2:4, 2:4] = [[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]]
    b = unit_rows(a @ rot)
    r, found = learn_map(a, b, rounds=5, k=5)
    np.testing.assert_allclose(r, rot, atol=1e-5)
    assert found[-1] == 300
    i, j = mutual_csls_pairs(unit_rows(a @ r), b, 5)
    assert np.array_equal(i, j) and len(i) == 300


def test_to_target_uses_the_map_both_ways():
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    al = Alignment(maps={("a", "b"): q.astype(np.float32)})
    x = unit_rows(rng.standard_normal((4, 6)))
    there = al.to_target(x, "a", "b")
    np.testing.assert_allclose(there, x @ q, atol=1e-5)
    np.testing.assert_allclose(al.to_target(there, "b", "a"), x, atol=1e-5)
    assert al.to_target(x, "a", "c") is x  # no map: identity


def test_alignment_round_trips_through_its_arrays():
    vecs = {"a": unit_rows(_blobs(seed=1)), "b": unit_rows(_blobs(seed=2)), "c": unit_rows(_blobs(seed=3))}
    al, log = fit_alignment(vecs, AlignConfig(kind="whiten", maps=True, map_rounds=2, csls_k=3, csls_candidates=9))
    assert set(log["map_pairs_per_round"]) == {"a<->b", "a<->c", "b<->c"}
    back = Alignment.from_arrays(al.describe(), al.arrays(), 12)
    for d in vecs:
        np.testing.assert_array_equal(back.align(vecs[d], d), al.align(vecs[d], d))
    assert back.describe() == al.describe() and back.csls == CslsParams(3, 9)
    assert back.source_domains == ["a", "b", "c"]
    for d in vecs:
        assert back.infer_source(vecs[d]) == al.infer_source(vecs[d])
    with pytest.raises(ValueError):
        Alignment.from_arrays({**al.describe(), "maps": []}, al.arrays(), 12)  # maps listed != maps stored
    with pytest.raises(ValueError):
        Alignment.from_arrays(al.describe(), {**al.arrays(), "mean/a": np.zeros(5, np.float32)}, 12)


def test_item_statistics_by_hand():
    vecs = {d: unit_rows(_blobs(n=30, seed=s)) for d, s in (("a", 1), ("b", 2))}
    al, _ = fit_alignment(vecs, AlignConfig(kind="mean", maps=False, csls_k=4, csls_candidates=8))
    aligned = {d: al.align(v, d) for d, v in vecs.items()}
    full = csls_item_stats(aligned, al, ["a", "b"])
    assert np.all(full["a"][:, 0] == 0) and np.all(full["b"][:, 1] == 0)
    np.testing.assert_allclose(full["b"][:, 0], np.sort(aligned["b"] @ aligned["a"].T, axis=1)[:, -4:].mean(1), atol=1e-6)
    np.testing.assert_allclose(full["a"][:, 1], np.sort(aligned["a"] @ aligned["b"].T, axis=1)[:, -4:].mean(1), atol=1e-6)


def test_source_classifier_separates_domains_the_gaussians_confuse():
    # two domains with the same covariance whose means differ along one low-variance direction
    rng = np.random.default_rng(8)
    base = rng.standard_normal((400, 6)) * [5, 5, 5, 5, 5, 0.05]
    vecs = {"a": base[:200], "b": base[200:] + [0, 0, 0, 0, 0, 0.5]}
    from uem.export.align import fit_source_classifier

    names, w, b = fit_source_classifier(vecs)
    al = Alignment(source_domains=names, source_weights=w, source_bias=b)
    assert al.infer_source(vecs["a"]) == ["a"] * 200 and al.infer_source(vecs["b"]) == ["b"] * 200


def test_align_config_validates():
    for bad in (dict(kind="pca"), dict(shrinkage=0), dict(map_rounds=0), dict(csls_k=10, csls_candidates=5)):
        with pytest.raises(ValueError):
            AlignConfig(**bad)


def test_csls_re_ranks_only_the_cosine_candidates():
    # an anti-hub (far from every query, so CSLS would lift it) outside the top-2 by cosine stays
    # below the candidates, as in the engine, which only re-ranks the index's top-M hits
    q = unit_rows(np.array([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0]]))
    t = unit_rows(np.array([[1.0, 0.05, 0.0], [0.95, 0.1, 0.1], [0.2, 0.0, 1.0]]))
    wide = pair_score_matrix(Alignment(csls=CslsParams(k=1, candidates=3)), q, "a", "b", t)
    narrow = pair_score_matrix(Alignment(csls=CslsParams(k=1, candidates=2)), q, "a", "b", t)
    assert np.all(narrow[:, 2] < narrow[:, :2].min(axis=1, keepdims=True).ravel())
    np.testing.assert_allclose(narrow[:, 2], (q @ t.T)[:, 2] - 10, atol=1e-6)
    assert wide[0, 2] > narrow[0, 2]


def test_a_one_item_domain_is_left_unaligned():
    vecs = {"a": unit_rows(_blobs(seed=1)), "b": unit_rows(_blobs(n=1, seed=2))}
    al = fit_domains(vecs, "whiten")
    assert al.domains == ["a"] and "b" not in al.whiteners
    np.testing.assert_allclose(al.align(vecs["b"], "b"), vecs["b"], atol=1e-6)  # not mapped to zero
