import itertools

import numpy as np
import pytest

from uem.eval.metrics import (Ranking, auroc, average_precision, class_balanced_mean, h_score,
                              known_acceptance_rate, mean_ignoring_nan, open_set_metrics,
                              precision_at_k, private_detection_accuracy, relevance,
                              retrieval_metrics, roc_curve, top1_accuracy)


def row(x):
    return np.asarray([x], dtype=float)


def test_ap_hand_computed():
    # ranking [1, 0, 1]: precision at the relevant ranks 1/1 and 2/3 -> (1 + 2/3) / 2 = 0.8333
    assert average_precision(row([3, 2, 1]), row([1, 0, 1]).astype(bool))[0] == pytest.approx(5 / 6)
    # ranking [0, 1, 1]: (1/2 + 2/3) / 2 = 0.58333
    assert average_precision(row([3, 2, 1]), row([0, 1, 1]).astype(bool))[0] == pytest.approx(7 / 12)
    # the scores decide the order, not the column order: items scored [1, 3, 2] rank as [b, c, a]
    # relevance of (a, b, c) = (1, 1, 0) -> ranking [1, 0, 1] -> 0.8333
    assert average_precision(row([1, 3, 2]), row([1, 1, 0]).astype(bool))[0] == pytest.approx(5 / 6)


def test_ap_no_relevant_item_is_nan_and_left_out_of_the_mean():
    ap = average_precision(np.array([[2.0, 1.0], [2.0, 1.0]]), np.array([[True, False], [False, False]]))
    assert ap[0] == 1.0 and np.isnan(ap[1])
    assert mean_ignoring_nan(ap) == 1.0
    assert np.isnan(mean_ignoring_nan([np.nan]))


def test_ap_with_ties_is_the_expectation_over_tie_orders():
    # two items tied, one relevant: half the time AP = 1/1, half the time 1/2 -> 0.75
    assert average_precision(row([1, 1]), row([1, 0]).astype(bool))[0] == pytest.approx(0.75)
    # four tied, two relevant: the 6 placements of the relevant pair give
    # {1,2}: 1, {1,3}: (1+2/3)/2, {1,4}: (1+2/4)/2, {2,3}: (1/2+2/3)/2, {2,4}: (1/2+2/4)/2,
    # {3,4}: (1/3+2/4)/2 -> sum 4.08333 / 6 = 0.680556
    got = average_precision(row([5, 5, 5, 5]), row([1, 0, 1, 0]).astype(bool))[0]
    assert got == pytest.approx(4.083333333 / 6)


def test_constant_scores_do_not_reward_item_order():
    # Breaking ties by index would make an embedding that says nothing look good when items of a
    # category are stored next to each other; the expectation does not depend on the order.
    rel = np.array([[True, True, False, False, False, False]])
    perm = np.array([[False, False, False, False, True, True]])
    s = np.zeros((1, 6))
    assert average_precision(s, rel)[0] == pytest.approx(average_precision(s, perm)[0])
    assert precision_at_k(s, rel, 2)[0] == pytest.approx(2 / 6)   # each rank is relevant w.p. 2/6


def test_tie_aware_metrics_match_brute_force_enumeration():
    rng = np.random.default_rng(1)
    for _ in range(40):
        s = rng.integers(0, 3, size=5).astype(float)
        r = rng.random(5) < 0.4
        if not r.any():
            continue
        aps, p3, t1 = [], [], []
        for perm in itertools.permutations(range(5)):
            o = np.lexsort((np.array(perm), -s))      # a random order inside each tie group
            rr = r[o]
            aps.append((rr * np.cumsum(rr) / np.arange(1, 6)).sum() / rr.sum())
            p3.append(rr[:3].mean())
            t1.append(rr[0])
        ranking = Ranking(s[None])
        assert ranking.average_precision(r[None])[0] == pytest.approx(np.mean(aps))
        assert ranking.precision_at(r[None], 3)[0] == pytest.approx(np.mean(p3))
        assert ranking.top1(r[None])[0] == pytest.approx(np.mean(t1))


def test_ap_matches_sklearn_without_ties():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    s = rng.normal(size=(30, 25))
    r = rng.random((30, 25)) < 0.3
    r[:, 0] = True
    ref = [sklearn.average_precision_score(r[i], s[i]) for i in range(30)]
    np.testing.assert_allclose(average_precision(s, r), ref, atol=1e-12)


def test_precision_at_k_hand_computed_and_clamped():
    s, r = row([4, 3, 2, 1]), row([1, 0, 1, 1]).astype(bool)
    assert precision_at_k(s, r, 1)[0] == 1.0
    assert precision_at_k(s, r, 2)[0] == 0.5
    assert precision_at_k(s, r, 3)[0] == pytest.approx(2 / 3)
    assert precision_at_k(s, r, 10)[0] == pytest.approx(3 / 4)   # k clamped to the 4 items
    with pytest.raises(ValueError):
        precision_at_k(s, r, 0)


def test_top1_hand_computed():
    # query 0: best item correct; query 1: best item wrong; query 2: two items tie first, one is
    # correct -> 1/2; query 3: nothing correct exists -> NaN (left out)
    s = np.array([[3, 2, 1], [3, 2, 1], [2, 2, 1], [3, 2, 1]], dtype=float)
    c = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    t = top1_accuracy(s, c)
    assert t[:3].tolist() == [1.0, 0.0, 0.5] and np.isnan(t[3])


def test_class_balanced_mean_hand_computed():
    # AP 1.0 and 0.5 in category a, 0.0 in b: plain mean 0.5; per category (0.75 + 0) / 2 = 0.375
    ap = np.array([1.0, 0.5, 0.0, np.nan])
    labels = ["a", "a", "b", "c"]
    assert mean_ignoring_nan(ap) == pytest.approx(0.5)
    assert class_balanced_mean(ap, labels) == pytest.approx(0.375)


def test_relevance_and_retrieval_metrics_counts():
    rel = relevance(["a", "b"], ["b", "a", "a"])
    assert rel.tolist() == [[False, True, True], [True, False, False]]
    # 3 queries: "a" (2 relevant items), "b" (1), "z" (no item of its category: not scored)
    s = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.1], [0.3, 0.2, 0.1]])
    m = retrieval_metrics(s, ["a", "b", "z"], ["a", "b", "a"], ["x", "y", "w"], ["x", "q", "r"], ks=(1, 2))
    # query a ranks [a(x), a(r), b] -> AP 1; query b ranks [b, a, a] -> AP 1
    assert m["n_scored"] == 2 and m["map"] == pytest.approx(1.0)
    # only query x has its identity among the items, and it is ranked first
    assert m["n_identity"] == 1 and m["top1_identity"] == 1.0
    # P@2: query a -> 2/2, query b -> 1/2 -> 0.75; query z not scored
    assert m["p_at_k"][2] == pytest.approx(0.75)
    assert np.isnan(m["p_at_k_per_query"][2][2])


def test_bad_scores_are_refused():
    with pytest.raises(ValueError):
        Ranking(np.array([1.0, 2.0]))
    with pytest.raises(ValueError):
        Ranking(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        average_precision(np.zeros((2, 2)), np.zeros((2, 3), dtype=bool))


def test_empty_retrieval_domain():
    m = retrieval_metrics(np.zeros((2, 0)), ["a", "b"], [], ["x", "y"], [])
    assert m["n_scored"] == 0 and m["map"] != m["map"]   # NaN


def test_open_set_hand_computed():
    accepted = [True, False, False, True, True]
    private = [True, True, False, False, False]
    # private queries 0, 1: only 1 rejected -> 1/2; shared 2, 3, 4: 3 and 4 accepted -> 2/3
    assert private_detection_accuracy(accepted, private) == pytest.approx(0.5)
    assert known_acceptance_rate(accepted, private) == pytest.approx(2 / 3)
    # H = 2 * 0.5 * 0.6667 / (0.5 + 0.6667) = 0.571429
    assert h_score(0.5, 2 / 3) == pytest.approx(4 / 7)
    assert h_score(0.0, 1.0) == 0.0 and h_score(0.0, 0.0) == 0.0


def test_open_set_all_private_or_all_shared():
    m = open_set_metrics([False, True], [0.9, 0.1], [True, True])
    assert m["private_detection"] == 0.5 and np.isnan(m["known_acceptance"])
    assert np.isnan(m["h_score"]) and np.isnan(m["auroc"])
    m = open_set_metrics([True, True], [0.9, 0.1], [False, False])
    assert m["known_acceptance"] == 1.0 and np.isnan(m["private_detection"])


def test_auroc_hand_computed_with_ties():
    # positives score 0.9, 0.4; negatives 0.4, 0.1. Pairs: (0.9>0.4)=1, (0.9>0.1)=1, (0.4=0.4)=1/2,
    # (0.4>0.1)=1 -> 3.5 / 4 = 0.875
    assert auroc([0.9, 0.4, 0.4, 0.1], [True, True, False, False]) == pytest.approx(0.875)
    assert auroc([1, 1, 1], [True, False, False]) == pytest.approx(0.5)


def test_auroc_matches_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    y = rng.random(500) < 0.3
    for s in (rng.normal(size=500), rng.integers(0, 5, size=500).astype(float)):  # with many ties
        assert auroc(s, y) == pytest.approx(sklearn.roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_endpoints_and_area():
    s, y = np.array([0.9, 0.8, 0.4, 0.3, 0.1]), np.array([1, 0, 1, 0, 0], dtype=bool)
    fpr, tpr, _ = roc_curve(s, y)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(s, y))


def test_full_benchmark_size_matches_a_direct_computation():
    """At the benchmark's size (1914 x 1914, 98 categories), top-1 identity equals the plain argmax
    count (continuous scores: no ties) — the vectorised path holds at scale. (Speed is a benchmark's
    business, not a test's: a wall-clock bar here failed on a loaded CI machine.)"""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1914, 64)).astype(np.float32)
    s = v @ (v + 2.0 * rng.normal(size=(1914, 64)).astype(np.float32)).T
    cats = rng.integers(0, 98, size=1914)
    m = retrieval_metrics(s, cats, cats, np.arange(1914), np.arange(1914), ks=(1, 5, 10))
    assert m["n_scored"] == 1914
    assert m["top1_identity"] == pytest.approx(np.mean(s.argmax(1) == np.arange(1914)))
    assert 0.0 < m["top1_identity"] < 1.0
