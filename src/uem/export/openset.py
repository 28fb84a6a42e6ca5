"""Label-free calibration of the open-set rules, per ordered domain pair.

anchored (the default; `uem.engine.openset.anchored`): the distances (1 - cosine) from each source item
to its closest target item, over the source items that are mutual CSLS nearest neighbours of a
target item (confident matches), stored as a quantile grid. No label is read, and nothing assumes
that a concept is missing: when every concept exists, a query is as close as the confident matches
and is accepted.

contrast (`--open-set contrast`):
for every ordered pair (source, target) of the bundle, every source item (a seeded sample of at most
`max_queries`) is scored exactly as the engine scores a query (`uem.engine.openset.
neighbourhood_contrast`, its own item skipped as the engine skips an indexed image queried again),
and Otsu's method splits the scores into "has a counterpart in target" and "private". No label is
read; the split only assumes the scores are bimodal when some concepts are missing from the target.
"""

from __future__ import annotations

import numpy as np

from ..engine.geometry import top_n
from ..engine.align import mutual_csls_pairs
from ..engine.openset import ALPHA, CONTRAST_K, neighbourhood_contrast, pair_key
from ..engine.openset.anchored import MIN_ANCHORS, quantile_grid


def otsu_threshold(scores: np.ndarray, bins: int = 256) -> float:
    """The value that splits `scores` into two groups with the largest between-group variance
    (Otsu 1979, on a histogram of `bins` bins); scores <= threshold form the lower group. Chosen
    over a two-Gaussian mixture, which split emoji3's scores less well (benchmarks/RESULTS-archive.md, "The open-set rule")."""
    s = np.asarray(scores, np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        raise ValueError("no finite score to threshold")
    lo, hi = float(s.min()), float(s.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(s, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1].astype(np.float64)          # lower group = bins 0..i
    w1 = len(s) - w0
    m0 = np.cumsum(counts * centres)[:-1]
    m1 = (counts * centres).sum() - m0
    with np.errstate(invalid="ignore", divide="ignore"):
        between = w0 * w1 * (m0 / w0 - m1 / w1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    # empty bins between two groups tie: take the middle of the gap, not its edge
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float((edges[best[0] + 1] + edges[best[-1] + 1]) / 2)


def top_cosines(q: np.ndarray, base: np.ndarray, n: int, chunk: int = 1024) -> np.ndarray:
    """Exact cosines of each row of q to its n nearest rows of base, best first."""
    out = np.empty((len(q), min(n, len(base))), np.float64)
    for i in range(0, len(q), chunk):
        out[i:i + chunk] = top_n(q[i:i + chunk] @ base.T, n)[1]
    return out


def _sample_rows(rng: np.random.Generator, n: int, max_queries: int) -> np.ndarray:
    """The source rows a calibration scores: all of them, or a seeded sorted sample of max_queries."""
    return np.sort(rng.choice(n, max_queries, replace=False)) if n > max_queries else np.arange(n)


def _targets(vectors: dict[str, np.ndarray], src: str, rows: np.ndarray, to_target):
    """(target, the source rows mapped into its space, its rows) for every other non-empty domain."""
    for tgt, t in vectors.items():
        if tgt == src or len(t) == 0:
            continue
        yield tgt, (rows if to_target is None else to_target(rows, src, tgt)), np.asarray(t, np.float32)


def contrast_calibration(vectors: dict[str, np.ndarray], k: int = CONTRAST_K, max_queries: int = 5000,
                         seed: int = 0, to_target=None) -> dict:
    """{"k", "thresholds": {"source->target": value}, "queries": {...}} for the bundle's manifest.

    `vectors`: unit rows per domain, as indexed (aligned). `to_target(rows, source, target)`: the
    bundle's map of a source's rows into a target's space (the engine's query path); default
    identity. A pair is left out (its queries fall back to the prototype rule) when the source has
    fewer than 2 items or the target none."""
    rng = np.random.default_rng(seed)
    thresholds, queries = {}, {}
    for src, v in vectors.items():
        v = np.asarray(v, np.float32)
        if len(v) < 2:
            continue
        rows = _sample_rows(rng, len(v), max_queries)
        own = top_cosines(v[rows], v, k + 1)
        for tgt, q, t in _targets(vectors, src, v[rows], to_target):
            score = neighbourhood_contrast(own, top_cosines(q, t, k), k)
            thresholds[pair_key(src, tgt)] = otsu_threshold(score)
            queries[pair_key(src, tgt)] = int(len(rows))
    return {"k": int(k), "thresholds": thresholds, "queries": queries, "method": "otsu"}


def anchored_calibration(vectors: dict[str, np.ndarray], alpha: float = ALPHA, csls_k: int = 10,
                         max_queries: int = 5000, seed: int = 0, to_target=None,
                         probes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """{"alpha", "grids": {"source->target": quantiles}, "anchors": {...}, "queries": {...},
    "wild_anchors": {...}}.

    `vectors`: unit rows per domain, as indexed (aligned); `to_target(rows, source, target)` as in
    `contrast_calibration`. `probes`: per source domain (item rows, aligned unit rows of wild copies
    of those items; export/probes.py): the copy of a confident match is a confident match too, as
    far as a user's picture of it is, so the grid holds both. A pair with fewer than MIN_ANCHORS
    confident matches is left out (its queries fall back to the prototype rule)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    grids, anchors, queries, wild_anchors = {}, {}, {}, {}
    probes = probes or {}
    for src, v in vectors.items():
        v = np.asarray(v, np.float32)
        if len(v) == 0:
            continue
        rows = _sample_rows(rng, len(v), max_queries)
        for tgt, q, t in _targets(vectors, src, v[rows], to_target):
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
