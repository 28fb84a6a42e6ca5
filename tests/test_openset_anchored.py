"""The anchored "no match" rule: closest target item against the pair's confident matches.

Hand-computed grid scores; a constructed pair of domains where the target lacks one cluster of the
source (that cluster rejected, the others accepted) and one where nothing is missing (nothing
rejected); the reason a user reads; bad calibration records; older bundles keep their rule.
"""

from __future__ import annotations

import numpy as np
import pytest

from uem.engine.errors import BundleError
from uem.engine.openset import OpenSetRule, rule_name
from uem.engine.openset.anchored import anchored_calibration, grid_score, quantile_grid
from uem.engine.prototypes import PrototypeGraph

EMPTY = PrototypeGraph(domains=[], centroids=np.zeros((0, 8), np.float32), owner=[], links=[], radius=[],
                       domain_means=np.zeros((0, 8)))


def test_grid_score_by_hand():
    grid = [0.0, 0.1, 0.2]                      # levels 0, 0.5, 1
    assert grid_score(0.05, grid) == pytest.approx(0.25)
    assert grid_score(0.15, grid) == pytest.approx(0.75)
    assert grid_score(0.2, grid) == pytest.approx(1.0)
    assert grid_score(0.3, grid) == pytest.approx(1.1)   # beyond every confident match: 1 + excess
    assert grid_score(-0.1, grid) == 0.0
    # ties (many equal distances) take the highest level of their run, so the score stays monotone
    assert grid_score(0.1, [0.0, 0.1, 0.1, 0.1, 0.4]) == pytest.approx(0.75)
    d = np.linspace(-0.2, 0.6, 50)
    assert np.all(np.diff(grid_score(d, [0.0, 0.1, 0.1, 0.1, 0.4])) >= 0)


def test_quantile_grid_is_101_sorted_quantiles():
    g = quantile_grid(np.arange(101) / 100.0)
    assert len(g) == 101 and g[0] == 0.0 and g[50] == pytest.approx(0.5) and g[-1] == pytest.approx(1.0)


def _clusters(rng, centres, n, spread):
    """n unit points around each centre, and their cluster numbers."""
    pts = [c + spread * rng.normal(size=(n, len(c))) for c in centres]
    x = np.concatenate(pts).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.repeat(np.arange(len(centres)), n)


def _domains(missing: bool, seed: int = 0):
    """8-d, 6 concepts of 30 items; every photo item has a sketch twin (the same item drawn in the
    other style: the photo point plus small noise), as every emoji exists in every vendor's set.
    With `missing`, sketch lacks concepts 4 and 5."""
    rng = np.random.default_rng(seed)
    photo, concept = _clusters(rng, np.eye(8)[:6], 30, 0.12)
    twins = photo + 0.03 * rng.normal(size=photo.shape)
    twins = (twins / np.linalg.norm(twins, axis=1, keepdims=True)).astype(np.float32)
    sketch = twins[concept < 4] if missing else twins
    return {"photo": photo, "sketch": sketch}, concept


@pytest.mark.parametrize("missing", [True, False])
def test_missing_cluster_rejected_others_accepted(missing):
    vecs, concept = _domains(missing)
    cal = anchored_calibration(vecs, alpha=0.01, csls_k=5)
    assert sorted(cal["grids"]) == ["photo->sketch", "sketch->photo"] and cal["anchors"]["photo->sketch"] >= 20
    rule = OpenSetRule(EMPTY, {"rule": "anchored", "anchored": cal})
    photo, sketch = vecs["photo"], vecs["sketch"]
    nearest = (photo @ sketch.T).max(axis=1)
    ds = [rule.decide(q, "sketch", float(c), "photo") for q, c in zip(photo, nearest)]
    accepted = np.array([d.accepted for d in ds])
    private = concept >= 4 if missing else np.zeros(len(concept), bool)
    assert accepted[~private].mean() >= 0.95          # every shared concept: (almost) all accepted
    if missing:
        assert not accepted[private].any()            # the cluster sketch lacks: all rejected
    # the score is monotone in the evidence: farther closest item, higher score
    order = np.argsort(-nearest)
    assert np.all(np.diff([ds[i].score for i in order]) >= -1e-12)


def test_reason_names_the_evidence():
    vecs, _ = _domains(True)
    rule = OpenSetRule(EMPTY, {"rule": "anchored", "anchored": anchored_calibration(vecs, csls_k=5)})
    far = rule.decide(vecs["photo"][-1], "sketch", 0.05, "photo")
    assert not far.accepted and "no sketch item is as close as 99% of confident photo->sketch matches" in far.reason
    assert "closest: cos 0.05" in far.reason and far.score > 1.0
    near = rule.decide(vecs["photo"][0], "sketch", 0.999, "photo")
    assert near.accepted and near.reason.startswith("concept exists in sketch: its closest item (cos 1.00)")
    grid = rule.rule.grids["photo->sketch"]
    weak_cos = 1.0 - float(np.interp(0.95, np.linspace(0, 1, len(grid)), grid))   # score 0.95: accepted, weak
    weak = rule.decide(vecs["photo"][0], "sketch", weak_cos, "photo")
    assert weak.accepted and weak.reason.startswith("weak match in sketch:") and "only 5%" in weak.reason
    assert "line" not in rule.describe() and rule.describe().startswith("closest item vs confident matches, alpha 0.01")


def test_uncalibrated_pair_falls_back_to_prototypes():
    vecs, _ = _domains(True)
    rule = OpenSetRule(EMPTY, {"rule": "anchored", "anchored": anchored_calibration(vecs, csls_k=5)})
    d = rule.decide(vecs["photo"][0], "clipart", 0.9, "photo")
    assert d.accepted and "open-set check unavailable" in d.reason


def test_too_few_confident_matches_leave_the_pair_out():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 8)).astype(np.float32)
    b = rng.normal(size=(3, 8)).astype(np.float32)
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    cal = anchored_calibration({"a": a, "b": b}, csls_k=2)
    assert cal["grids"] == {} and cal["anchors"]["a->b"] <= 3


@pytest.mark.parametrize("bad", [{"rule": "anchored", "anchored": {"alpha": 0.0}},
                                 {"rule": "anchored", "anchored": {"alpha": 1.5}},
                                 {"rule": "anchored", "anchored": {"grids": {"a->b": [0.3, 0.1]}}},
                                 {"rule": "anchored", "anchored": {"grids": {"a->b": [0.1, float("nan")]}}},
                                 {"rule": "anchored", "anchored": []},
                                 {"rule": "magic"}])
def test_bad_anchored_calibration_is_a_bundle_error(bad):
    with pytest.raises(BundleError):
        OpenSetRule(EMPTY, bad)


def test_older_bundles_keep_their_rule():
    assert rule_name({}) == "prototype"
    assert rule_name({"radius_scale": {"x": 1.0}}) == "prototype"
    assert rule_name({"contrast": {"k": 5, "thresholds": {"a->b": 0.1}}}) == "contrast"
    assert rule_name({"rule": "anchored", "anchored": {}}) == "anchored"
    assert OpenSetRule(EMPTY, {"contrast": {"k": 5, "thresholds": {"a->b": 0.1}}}).own_k("a", "b") == 6
    assert OpenSetRule(EMPTY, {"rule": "anchored", "anchored": {}}).own_k("a", "b") == 0


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, "x"])
def test_export_config_refuses_bad_alpha(alpha):
    from uem.export.config import ExportConfig
    from uem.train.config import ConfigError

    with pytest.raises(ConfigError, match="open_set_alpha must be between 0 and 1"):
        ExportConfig(open_set_alpha=alpha)


def test_alpha_sets_the_threshold():
    vecs, _ = _domains(True)
    strict = OpenSetRule(EMPTY, {"rule": "anchored", "anchored": anchored_calibration(vecs, alpha=0.2, csls_k=5)})
    lenient = OpenSetRule(EMPTY, {"rule": "anchored", "anchored": anchored_calibration(vecs, alpha=0.01, csls_k=5)})
    # a larger alpha accepts only closer items: its cosine bar is higher
    assert strict.rule.threshold("photo->sketch") < lenient.rule.threshold("photo->sketch")
