"""The open-set decision on a hand-made 3-d case where every answer is known, and the rule
interface: a toy rule registered by name is fitted, stored in a bundle and decides its queries."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from uem.engine.errors import BundleError
from uem.engine.geometry import uem_distance, uem_distance_from_cos
from uem.engine.openset import (RULES, UNLINKED_SCORE, Decision, FitInputs, OpenSetRule, Rule, fit_calibration,
                                neighbourhood_contrast, pair_key, register)
from uem.engine.prototypes import PrototypeGraph
from uem.eval.engine_scores import rule_reject_fn


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
    reject = rule_reject_fn(OpenSetRule(GRAPH))
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
    assert not rule.covers("sketch", "photo")
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
    accepted, score = rule_reject_fn(rule, own_search)(queries, "photo", "sketch", targets)
    assert asked == [("photo", 3)]
    assert accepted.tolist() == [True, False] and score[1] > 0.1 >= score[0]


@pytest.mark.parametrize("bad", [{"contrast": {"k": -1, "thresholds": {}}},
                                 {"contrast": {"thresholds": {"photo->sketch": "x"}}},
                                 {"contrast": {"thresholds": {"photo->sketch": float("nan")}}},
                                 {"contrast": []}, {"radius_scale": {"sketch": None}}])
def test_bad_calibration_is_a_bundle_error(bad):
    with pytest.raises(BundleError):
        OpenSetRule(GRAPH, bad)


# -- the rule interface: a new rule is one class, registered by name -------------------------------
class ToyRule(Rule):
    """Rejects when the mean of the query's 2 best target cosines is below the pair's fitted bar:
    the mean of every source item's own such value (hand-computable)."""

    name = "toy"
    target_k = 2

    def __init__(self, record=None):
        super().__init__(record)
        self.bars = {str(p): float(v) for p, v in ((record or {}).get("bars") or {}).items()}

    @classmethod
    def fit(cls, inputs):
        bars = {}
        for s, v in inputs.vectors.items():
            for t, w in inputs.vectors.items():
                if s != t:
                    best = -np.sort(-(v @ w.T), axis=1)[:, :2]
                    bars[pair_key(s, t)] = float(best.mean())
        return {"bars": bars}

    def covers(self, pair):
        return pair in self.bars

    def decide(self, ev):
        if ev.target_sims is None or len(ev.target_sims) < 2:
            return None
        score = self.bars[ev.pair] - float(np.mean(ev.target_sims[:2]))
        return Decision(score <= 0, f"toy: {score:.2f} below the bar", score, ev.source)

    def describe(self):
        return "toy: " + ", ".join(f"{p} {v:.2f}" for p, v in sorted(self.bars.items())) if self.bars else None


TOY_VECTORS = {"photo": np.stack([unit(1, 0, 0), unit(0, 1, 0)]),
               "sketch": np.stack([unit(1, 0, 0), unit(1, 1, 0)])}


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(RULES, ToyRule.name, ToyRule)  # what `register(ToyRule)` does, undone after
    return ToyRule


def test_a_new_rule_registers_by_name_and_is_fitted_stored_and_decided(toy):
    from uem.export.config import ExportConfig

    assert ExportConfig(open_set="toy").open_set == "toy"          # a valid --open-set choice
    cal = fit_calibration("toy", FitInputs(TOY_VECTORS))
    # by hand: photo x -> sketch cosines (1, .707), photo y -> (0, .707): mean of the four = 0.604;
    # sketch x -> photo (1, 0), sketch (x+y) -> photo (.707, .707): mean 0.604 as well
    assert cal["rule"] == "toy" and set(cal) == {"rule", "toy"}
    assert cal["toy"]["bars"]["photo->sketch"] == pytest.approx((1 + 2 * 0.5 ** 0.5) / 4)
    assert cal["toy"]["bars"]["sketch->photo"] == pytest.approx((1 + 2 * 0.5 ** 0.5) / 4)
    rule = OpenSetRule(GRAPH, json.loads(json.dumps(cal)))        # as a manifest stores it
    assert rule.name == "toy" and rule.rule.to_record() == cal["toy"]
    assert rule.describe() == "toy: photo->sketch 0.60, sketch->photo 0.60"
    q = unit(0, 1, 0)   # photo's private "car": the fallback would reject it
    ok = rule.decide(q, "sketch", 0.9, "photo", target_sims=np.array([0.9, 0.5]))
    assert ok.accepted and ok.score == pytest.approx(0.604 - 0.7, abs=1e-3)
    no = rule.decide(q, "sketch", 0.6, "photo", target_sims=np.array([0.6, 0.2]))
    assert not no.accepted and no.reason.startswith("toy:")
    # evidence it cannot use (one target hit), or a pair it does not cover: the prototype rule
    assert rule.decide(q, "sketch", 0.6, "photo", target_sims=np.array([0.6])).reason \
        == "nearest concept exists only in photo"
    assert rule_reject_fn(rule)(np.stack([unit(1, 0, 0), q]), "photo", "sketch",
                                TOY_VECTORS["sketch"])[0].tolist() == [True, False]


def test_a_registered_rule_decides_an_engine_query(toy, tmp_path, monkeypatch):
    from uem.engine import Engine
    from uem.testing.bundles import make_bundle

    plain = make_bundle(tmp_path / "plain")
    with Engine.open(plain) as e:
        vecs = {d: e.embed([it["path"] for it in e.items(d)]) for d in e.domains}
    bundle = make_bundle(tmp_path / "toy", calibration=fit_calibration("toy", FitInputs(vecs)))
    with Engine.open(bundle) as e:
        assert e.info()["calibration"]["rule"] == "toy"
        items = e.items("photo")
        results = e.query_batch([it["path"] for it in items], "sketch", k=2, source="photo")
        assert all(r.reason.startswith("toy:") for r in results)
        assert any(r.accepted for r in results)
    monkeypatch.delitem(RULES, "toy")   # a uem that does not know the rule refuses the bundle
    with pytest.raises(BundleError, match="unknown open-set rule 'toy'"):
        Engine.open(bundle)


def test_register_refuses_a_taken_name():
    class Other(ToyRule):
        name = "anchored"

    with pytest.raises(ValueError, match="already registered"):
        register(Other)
