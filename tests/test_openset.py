"""The open-set decision on a hand-made 3-d case where every answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uem.engine.errors import BundleError
from uem.engine.geometry import uem_distance, uem_distance_from_cos
from uem.engine.openset import UNLINKED_SCORE, OpenSetRule, neighbourhood_contrast
from uem.engine.prototypes import PrototypeGraph


def unit(*xs):
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


# photo owns "cat" (x axis) and "car" (y axis); sketch owns "cat" (near x) and "tree" (z axis).
# Only cat is merged across domains, with radius 0.05.
GRAPH = PrototypeGraph(
    domains=["photo", "sketch"],
    centroids=np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(1, 0.1, 0), unit(0, 0, 1)]),
    owner=[0, 0, 1, 1],
    links=[[0, 2]],
    radius=[0.05],
    domain_means=np.zeros((2, 3)),
)


def test_distance_matches_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        u, v = unit(*rng.normal(size=3)), unit(*rng.normal(size=3))
        assert uem_distance_from_cos(float(u @ v)) == pytest.approx(uem_distance(u, v), abs=1e-6)
    assert uem_distance_from_cos(1.0) == 0.0
    assert uem_distance_from_cos(-1.0) == pytest.approx(4.0)


def test_private_concept_is_rejected():
    rule = OpenSetRule(GRAPH)
    q = unit(0.05, 1, 0)  # a car photo: car exists only in photo
    d = rule.decide(q, "sketch", nearest_cos=0.2, source="photo")
    assert not d.accepted
    assert d.reason == "nearest concept exists only in photo"
    assert d.score >= UNLINKED_SCORE


def test_shared_concept_within_radius_is_accepted():
    rule = OpenSetRule(GRAPH)
    q = unit(1, 0.02, 0)
    cos = 0.98  # D = 0.02 * sqrt(0.04) = 0.004 < 0.05
    d = rule.decide(q, "sketch", nearest_cos=cos, source="photo")
    assert d.accepted and d.score == pytest.approx(uem_distance_from_cos(cos) / 0.05)
    assert d.score < 1


def test_shared_concept_beyond_radius_is_rejected():
    rule = OpenSetRule(GRAPH)
    q = unit(1, 0.02, 0)
    cos = 0.6  # D = 0.4 * sqrt(0.8) = 0.358 > 0.05
    d = rule.decide(q, "sketch", nearest_cos=cos, source="photo")
    assert not d.accepted
    assert d.reason == "nearest sketch item is farther than this concept's radius"
    assert d.score == pytest.approx(uem_distance_from_cos(cos) / 0.05)


def test_calibrated_factor_scales_the_radius():
    cos = 0.6
    D = uem_distance_from_cos(cos)
    factor = math.ceil(D / 0.05) + 1
    rule = OpenSetRule(GRAPH, {"radius_scale": {"sketch": factor}})
    d = rule.decide(unit(1, 0.02, 0), "sketch", nearest_cos=cos, source="photo")
    assert d.accepted and d.score == pytest.approx(D / (0.05 * factor))


def test_links_work_in_both_directions_and_source_is_inferred():
    rule = OpenSetRule(GRAPH)
    assert rule.infer_source(unit(0, 0.1, 1)) == "sketch"
    tree = rule.decide(unit(0, 0.1, 1), "photo", nearest_cos=0.1)
    assert not tree.accepted and tree.source == "sketch"
    assert tree.reason == "nearest concept exists only in sketch"
    cat = rule.decide(unit(1, 0.08, 0), "photo", nearest_cos=0.999, source="sketch")
    assert cat.accepted


def test_same_domain_and_unknown_prototypes_accept():
    rule = OpenSetRule(GRAPH)
    assert rule.decide(unit(0, 1, 0), "photo", 0.5, source="photo").reason == "same domain"
    d = rule.decide(unit(0, 1, 0), "clipart", 0.5, source="photo")
    assert d.accepted and "unavailable" in d.reason


def test_score_orders_queries_for_auroc():
    rule = OpenSetRule(GRAPH)
    scores = [rule.decide(unit(1, 0.02, 0), "sketch", c, "photo").score for c in (0.99, 0.9, 0.6)]
    private = rule.decide(unit(0, 1, 0), "sketch", 0.99, "photo").score
    assert scores == sorted(scores) and private > scores[-1] and math.isfinite(private)


def test_reject_fn_adapter_for_eval():
    reject = OpenSetRule(GRAPH).reject_fn()
    queries = np.stack([unit(1, 0.02, 0), unit(0.05, 1, 0)])
    targets = np.stack([unit(1, 0.03, 0), unit(0, 0, 1)])
    accepted, score = reject(queries, "photo", "sketch", targets)
    assert accepted.tolist() == [True, False] and score[1] > score[0]


# -- neighbourhood contrast ------------------------------------------------------------------------
CONTRAST = {"contrast": {"k": 2, "thresholds": {"photo->sketch": 0.1}}}


def test_contrast_score_hand_computed():
    own = np.array([[0.9, 0.8, 0.7], [1.0, 0.6, 0.4]])     # row 2 starts with the query itself
    tgt = np.array([[0.85, 0.75, 0.1], [0.2, 0.0, -0.5]])
    s = neighbourhood_contrast(own, tgt, k=2)
    assert s == pytest.approx([(0.9 + 0.8) / 2 - (0.85 + 0.75) / 2, (0.6 + 0.4) / 2 - (0.2 + 0.0) / 2])


def test_contrast_score_skips_self_once_and_handles_short_rows():
    # an exact duplicate of the query stays a neighbour: only one self hit is skipped
    assert neighbourhood_contrast([[1.0, 1.0, 0.5]], [[0.5, 0.5]], k=2)[0] == pytest.approx(0.75 - 0.5)
    # NaN padding (fewer hits than asked) averages what is there; nothing left -> NaN
    assert neighbourhood_contrast([[0.8, np.nan]], [[0.6, np.nan]], k=2)[0] == pytest.approx(0.2)
    assert np.isnan(neighbourhood_contrast([[1.0, np.nan]], [[0.6]], k=2)[0])
    with pytest.raises(ValueError):
        neighbourhood_contrast(np.ones((2, 3)), np.ones((3, 3)))


def test_contrast_rule_decides_calibrated_pairs():
    rule = OpenSetRule(GRAPH, CONTRAST)
    q = unit(0, 1, 0)   # photo's private "car": the prototype rule would reject it...
    near = rule.decide(q, "sketch", 0.8, "photo", target_sims=[0.8, 0.7], own_sims=[0.85, 0.75])
    assert near.accepted and near.score == pytest.approx(0.05)    # ...contrast 0.05 <= 0.1 accepts
    far = rule.decide(q, "sketch", 0.3, "photo", target_sims=[0.3, 0.2], own_sims=[0.85, 0.75])
    assert not far.accepted and far.score == pytest.approx(0.55) and "neighbours" in far.reason
    # without neighbour lists, or for a pair without a threshold, the prototype rule decides
    assert rule.decide(q, "sketch", 0.8, "photo").reason == "nearest concept exists only in photo"
    assert not rule.uses_contrast("sketch", "photo")
    assert rule.decide(unit(0, 0, 1), "photo", 0.9, "sketch", target_sims=[0.9], own_sims=[0.9]).reason \
        == "nearest concept exists only in sketch"
    # nothing left on the own side (only the query itself): prototype rule
    assert rule.decide(q, "sketch", 0.8, "photo", target_sims=[0.8], own_sims=[1.0]).reason \
        == "nearest concept exists only in photo"


def test_contrast_reject_fn_uses_own_search():
    rule = OpenSetRule(GRAPH, CONTRAST)
    own_vectors = np.stack([unit(1, 0, 0), unit(1, 0.05, 0), unit(0, 1, 0), unit(0.05, 1, 0)])
    targets = np.stack([unit(1, 0.03, 0), unit(1, 0.0, 0.05)])
    asked = []

    def own_search(domain, vecs, n):
        asked.append((domain, n))
        return -np.sort(-(vecs @ own_vectors.T), axis=1)[:, :n]

    queries = own_vectors[[0, 2]]     # a cat (has sketch partners) and a car (has none)
    accepted, score = rule.reject_fn(own_search)(queries, "photo", "sketch", targets)
    assert asked == [("photo", 3)]
    assert accepted.tolist() == [True, False] and score[1] > 0.1 >= score[0]


@pytest.mark.parametrize("bad", [{"contrast": {"k": -1, "thresholds": {}}},
                                 {"contrast": {"thresholds": {"photo->sketch": "x"}}},
                                 {"contrast": {"thresholds": {"photo->sketch": float("nan")}}},
                                 {"contrast": []}, {"radius_scale": {"sketch": None}}])
def test_bad_calibration_is_a_bundle_error(bad):
    with pytest.raises(BundleError):
        OpenSetRule(GRAPH, bad)
