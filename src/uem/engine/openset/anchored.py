"""The default "no match" rule: the query's closest target item, against confident matches.

A query's evidence is the cosine of its closest item in the target domain (in the aligned space the
engine searches). What counts as "close enough" is learnt per ordered domain pair at export without
labels, from the source items that are mutual nearest neighbours (CSLS) of a target item: pairs that
chose each other are the most reliable matches a bundle has. Their distances (1 - cosine) are stored
as a quantile grid. A query's score is where its distance falls in that distribution: 0.5 = as close
as a typical confident match, 1.0 = farther than every one of them (beyond, 1 + the excess distance,
so the ranking stays informative). "No match" when the score is above 1 - alpha (alpha = 0.01 by
default: a confident match is wrongly refused 1 time in 100).

Why this and not a split of all scores: a split (Otsu's, a two-Gaussian mixture) always finds two
groups, so it rejects a third of the queries even when every concept exists; a quantile of confident
matches does not assume that anything is missing. Why the closest item and not CSLS or neighbourhood
contrast: CSLS separates private queries slightly better, but its confident matches are selected by
CSLS itself, so their quantiles are too strict (close-set acceptance 0.83-0.89 on emoji3 at alpha
0.01, against 0.95-0.98 here); contrast ranks private queries worse on phosphor4 (AUROC 0.58-0.85
against 0.88-0.96). Measured in benchmarks/RESULTS-archive.md, "No match on the aligned space".
"""

from __future__ import annotations

import numpy as np

from ..csls import mutual_csls_pairs
from ..errors import BundleError
from .base import ALPHA, Decision, Evidence, FitInputs, Rule, pair_key, sample_rows, target_rows, top_cosines
from .record import parse_record

GRID = 101          # quantiles stored per pair: 0.00, 0.01, ..., 1.00
WEAK = 0.9          # accepted, but farther than 90% of confident matches: the answer says "weak match"
MIN_ANCHORS = 5     # fewer confident matches than this: the pair is left to the prototype rule


def quantile_grid(distances: np.ndarray, size: int = GRID) -> list[float]:
    """The `size` evenly spaced quantiles (0 to 1) of the confident matches' distances."""
    d = np.asarray(distances, np.float64)
    return [float(x) for x in np.quantile(d, np.linspace(0.0, 1.0, size))]


def grid_table(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct grid values ascending, the quantile level of each): what `score_in` interpolates.
    Equal grid values (many ties) would make np.interp ill-defined: a run takes its highest level."""
    g = np.asarray(grid, np.float64)
    levels = np.linspace(0.0, 1.0, len(g))
    g_unique, last = np.unique(g[::-1], return_index=True)
    return g_unique, levels[::-1][last]


def score_in(distance: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Where each distance falls among the confident matches: the interpolated quantile level in
    [0, 1]; beyond the largest, 1 + the excess (monotone in the distance everywhere)."""
    d = np.asarray(distance, np.float64)
    values, levels = table
    inside = np.interp(d, values, levels, left=0.0, right=1.0)
    return np.where(d > values[-1], 1.0 + (d - values[-1]), inside)


def grid_score(distance: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """`score_in` for a grid given as stored (sorted quantiles)."""
    return score_in(distance, grid_table(grid))


class AnchoredRule(Rule):
    """Per-pair quantile grids of confident-match distances (the manifest's calibration["anchored"])."""

    name = "anchored"

    def __init__(self, record: dict | None = None) -> None:
        super().__init__(record)
        self.alpha, self.grids, self.anchors = parse_record(record, "anchored", lambda r: (
            float(r.get("alpha", ALPHA)),
            {str(p): np.asarray(g, np.float64) for p, g in (r.get("grids") or {}).items()},
            {str(p): int(n) for p, n in (r.get("anchors") or {}).items()}))
        if not 0.0 < self.alpha < 1.0:
            raise BundleError(f"invalid open-set calibration (alpha {self.alpha} not in (0, 1))")
        for p, g in self.grids.items():
            if g.ndim != 1 or len(g) < 2 or not np.all(np.isfinite(g)) or np.any(np.diff(g) < 0):
                raise BundleError(f"invalid open-set calibration (grid of {p} is not a sorted finite list)")
        # fixed for the bundle's life: computed once here, not per query
        self._tables = {p: grid_table(g) for p, g in self.grids.items()}
        self._thresholds = {p: float(np.interp(1.0 - self.alpha, np.linspace(0.0, 1.0, len(g)), g))
                            for p, g in self.grids.items()}

    @classmethod
    def fit(cls, inputs: FitInputs) -> dict:
        return anchored_calibration(inputs.vectors, alpha=inputs.alpha, seed=inputs.seed,
                                    to_target=inputs.to_target, csls_k=max(inputs.csls_k, 1),
                                    probes=inputs.probes)

    def covers(self, pair: str) -> bool:
        return pair in self.grids

    def decide(self, evidence: Evidence) -> Decision | None:
        """The closest target item's distance against the pair's grid (None: the target is empty)."""
        if evidence.nearest_cos is None:
            return None
        score = float(self.score(evidence.pair, evidence.nearest_cos))
        accepted = not self.rejects(score)
        return Decision(accepted, self.reason(evidence.source, evidence.target, accepted, score,
                                              evidence.nearest_cos), score, evidence.source)

    def threshold(self, pair: str) -> float:
        """The largest distance (1 - cosine) still accepted: the (1 - alpha) quantile."""
        return self._thresholds[pair]

    def score(self, pair: str, nearest_cos: np.ndarray) -> np.ndarray:
        return score_in(1.0 - np.asarray(nearest_cos, np.float64), self._tables[pair])

    def rejects(self, score: float) -> bool:
        return score > 1.0 - self.alpha

    def reason(self, source: str, target: str, accepted: bool, score: float, nearest_cos: float) -> str:
        """What the user reads: the evidence (closest item's cosine) against the confident matches."""
        need = 1.0 - self.threshold(f"{source}->{target}")
        if not accepted:
            return (f"no {target} item is as close as {100 * (1 - self.alpha):g}% of confident "
                    f"{source}->{target} matches (closest: cos {nearest_cos:.2f}, needed {need:.2f})")
        closer = max(0.0, min(1.0, 1.0 - score))
        if score > WEAK:
            return (f"weak match in {target}: its closest item (cos {nearest_cos:.2f}) is closer than "
                    f"only {100 * closer:.0f}% of confident {source}->{target} matches")
        return (f"concept exists in {target}: its closest item (cos {nearest_cos:.2f}) is closer than "
                f"{100 * closer:.0f}% of confident {source}->{target} matches")

    def describe(self) -> str | None:
        if not self.grids:
            return None
        pairs = ", ".join(f"{p} cos >= {1 - self.threshold(p):.3f} ({self.anchors.get(p, '?')} anchors)"
                          for p in sorted(self.grids))
        return f"closest item vs confident matches, alpha {self.alpha:g}: {pairs}"



def anchored_calibration(vectors: dict[str, np.ndarray], alpha: float = ALPHA, csls_k: int = 10,
                         max_queries: int = 5000, seed: int = 0, to_target=None,
                         probes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """{"alpha", "grids": {"source->target": quantiles}, "anchors": {...}, "queries": {...},
    "wild_anchors": {...}}: this rule's record, fitted at export without labels.

    `vectors`: unit rows per domain, as indexed (aligned); `to_target(rows, source, target)`: the
    bundle's map of a source's rows into a target's space (the engine's query path; default
    identity). Every source item (a seeded sample of at most `max_queries`) that is a mutual CSLS
    nearest neighbour of a target item is a confident match; the distances (1 - cosine) to their
    closest target item make the pair's grid. Nothing assumes that a concept is missing: when every
    concept exists, a query is as close as the confident matches and is accepted. `probes`: per
    source domain (item rows, aligned unit rows of wild copies of those items; export/probes.py):
    the copy of a confident match is a confident match too, as far as a user's picture of it is,
    so the grid holds both. A pair with fewer than MIN_ANCHORS confident matches is left out (its
    queries fall back to the prototype rule)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    grids, anchors, queries, wild_anchors = {}, {}, {}, {}
    probes = probes or {}
    for src, v in vectors.items():
        v = np.asarray(v, np.float32)
        if len(v) == 0:
            continue
        rows = sample_rows(rng, len(v), max_queries)
        for tgt, q, t in target_rows(vectors, src, v[rows], to_target):
            mine, _ = mutual_csls_pairs(q, t, min(csls_k, len(t), len(q)))
            key = pair_key(src, tgt)
            queries[key], anchors[key] = int(len(rows)), int(len(mine))
            if len(mine) < MIN_ANCHORS:
                continue
            nearest = top_cosines(q[mine], t, 1)[:, 0]
            if src in probes:
                p_rows, p_vecs = probes[src]
                copies = np.flatnonzero(np.isin(p_rows, rows[mine]))
                wild_anchors[key] = int(len(copies))
                if len(copies):
                    pq = p_vecs[copies] if to_target is None else to_target(p_vecs[copies], src, tgt)
                    nearest = np.concatenate([nearest, top_cosines(np.asarray(pq, np.float32), t, 1)[:, 0]])
            grids[key] = quantile_grid(1.0 - nearest)
    out = {"alpha": float(alpha), "csls_k": int(csls_k), "grids": grids, "anchors": anchors,
           "queries": queries, "method": "mutual-csls-quantiles"}
    if probes:
        out["wild_anchors"] = wild_anchors
    return out
