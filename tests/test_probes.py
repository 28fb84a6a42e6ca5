"""Wild probes: stored in the alignment, counted by the "no match" calibration, kept by realign."""

import numpy as np
import pytest

from uem.engine.align import Alignment
from uem.engine.openset.anchored import anchored_calibration, quantile_grid
from uem.export.probes import probe_rows

E = np.eye(6, dtype=np.float32)  # MIN_ANCHORS (5) confident matches are needed for a grid


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def test_a_wild_copy_of_a_confident_match_widens_the_grid_by_hand():
    # a's items e0..e4 and b's e0..e4 choose each other (cos 1: distance 0); the wild copy of a's
    # row 0 leans towards e5: cos to e0 = 1 / sqrt(1.25), distance 1 - 0.894427 = 0.105573
    vectors = {"a": E[:5].copy(), "b": E[:5].copy()}
    wild = _unit([1.0, 0.0, 0.0, 0.0, 0.0, 0.5])[None]
    cal = anchored_calibration(vectors, csls_k=2, probes={"a": (np.array([0]), wild)})
    assert cal["anchors"]["a->b"] == 5 and cal["wild_anchors"] == {"a->b": 1}
    assert cal["grids"]["a->b"] == pytest.approx(quantile_grid([0.0] * 5 + [1 - 1 / np.sqrt(1.25)]))
    assert cal["grids"]["a->b"][-1] == pytest.approx(0.105573, abs=1e-6)
    # b has no probes: its grid is the indexed pictures' alone
    assert cal["grids"]["b->a"] == pytest.approx(quantile_grid([0.0] * 5))
    # without probes nothing changes and no wild record is written
    plain = anchored_calibration(vectors, csls_k=2)
    assert "wild_anchors" not in plain and plain["grids"]["a->b"] == pytest.approx(quantile_grid([0.0] * 5))


def test_a_probe_of_an_item_that_is_no_confident_match_is_not_counted():
    # a's row 5 (e5) has no partner among b's items; its copy must not enter the grid
    vectors = {"a": E.copy(), "b": E[:5].copy()}
    cal = anchored_calibration(vectors, csls_k=2, probes={"a": (np.array([5]), E[5][None].copy())})
    assert cal["anchors"]["a->b"] == 5 and cal["wild_anchors"]["a->b"] == 0
    assert cal["grids"]["a->b"] == pytest.approx(quantile_grid([0.0] * 5))


def test_probes_round_trip_through_the_alignment_arrays():
    a = Alignment(kind="mean", means={"x": np.zeros(6, np.float32)},
                  probes={"x": E[:3].copy()}, probe_rows={"x": np.array([0, 5, 7])})
    record = a.describe()
    assert record["probes"] == {"x": 3}
    b = Alignment.from_arrays(record, dict(a.arrays()), dim=6)
    assert np.array_equal(b.probes["x"], a.probes["x"]) and b.probe_rows["x"].tolist() == [0, 5, 7]
    with pytest.raises(ValueError, match="probes"):
        Alignment.from_arrays({**record, "probes": {"x": 2}}, dict(a.arrays()), dim=6)
    with pytest.raises(ValueError, match="item rows"):
        Alignment(probes={"x": E[:3].copy()}, probe_rows={"x": np.array([0])})
    assert "probes" not in Alignment().describe()


def test_probe_rows_are_seeded_sorted_and_bounded():
    r = probe_rows(1000, "sketch", seed=0, n=50)
    assert len(r) == 50 == len(set(r.tolist())) and list(r) == sorted(r) and r.max() < 1000
    assert np.array_equal(r, probe_rows(1000, "sketch", seed=0, n=50))
    assert not np.array_equal(r, probe_rows(1000, "photo", seed=0, n=50))
    assert probe_rows(7, "x", seed=0, n=50).tolist() == list(range(7))
