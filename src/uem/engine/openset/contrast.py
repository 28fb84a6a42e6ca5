"""Neighbourhood contrast: how much closer a query's own-domain neighbours are than its target ones.

score = mean cosine of the query's k nearest items in its OWN domain - mean cosine of its k nearest
items in the TARGET domain; "no match" when the score is above the pair's threshold (Otsu's split of
every source item's score, fitted at export: `contrast_calibration`). Why it was
the default once: the embedding keeps a domain gap, and the own-domain neighbours cancel how crowded
the query's region is. Why it no longer is: Otsu always finds two groups, so it rejects a third of
the queries when every concept exists, and on phosphor4 it ranks private queries worse than the
nearest item does (benchmarks/RESULTS-archive.md, "No match on the aligned space"). `--open-set contrast`.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BundleError
from .base import Decision, Evidence, FitInputs, Rule, pair_key, sample_rows, target_rows, top_cosines
from .record import parse_record

CONTRAST_K = 5            # neighbours per side; k = 3..10 measured within 0.01 AUROC of each other
SELF_COS = 0.9999         # an own-domain hit this close is the query itself (skipped once)


def neighbourhood_contrast(own_sims: np.ndarray, target_sims: np.ndarray, k: int = CONTRAST_K) -> np.ndarray:
    """Per query: mean of its k best own-domain cosines - mean of its k best target cosines.

    Rows are best first and may be ragged (NaN-padded). A leading own-domain hit at cos >= SELF_COS is
    the query itself (an indexed image queried again) and is skipped once, so a stored item and a new
    picture of it score alike. NaN where a side has no neighbour left.
    """
    own = np.atleast_2d(np.asarray(own_sims, np.float64))
    tgt = np.atleast_2d(np.asarray(target_sims, np.float64))
    if own.shape[0] != tgt.shape[0]:
        raise ValueError(f"{own.shape[0]} own-domain rows for {tgt.shape[0]} target rows")
    cols = np.arange(own.shape[1])
    start = (own[:, :1] >= SELF_COS).astype(np.int64) if own.shape[1] else np.zeros((len(own), 1), np.int64)
    keep = (cols >= start) & (cols < start + k) & np.isfinite(own)
    tkeep = (np.arange(tgt.shape[1]) < k) & np.isfinite(tgt)
    with np.errstate(invalid="ignore", divide="ignore"):
        own_mean = np.where(keep, own, 0.0).sum(1) / keep.sum(1)
        tgt_mean = np.where(tkeep, tgt, 0.0).sum(1) / tkeep.sum(1)
    return own_mean - tgt_mean


class ContrastRule(Rule):
    """Per-pair thresholds on neighbourhood contrast (the manifest's calibration["contrast"])."""

    name = "contrast"

    def __init__(self, record: dict | None = None) -> None:
        super().__init__(record)
        self.k, self.thresholds = parse_record(record, "contrast", lambda r: (
            int(r.get("k", CONTRAST_K)) if r else 0,
            {str(p): float(v) for p, v in (r.get("thresholds") or {}).items()}))
        if self.k < 0 or not all(math.isfinite(v) for v in self.thresholds.values()):
            raise BundleError("invalid open-set calibration (negative k or non-finite value)")

    @property
    def target_k(self) -> int:  # type: ignore[override]
        return self.k

    @classmethod
    def fit(cls, inputs: FitInputs) -> dict:
        return contrast_calibration(inputs.vectors, seed=inputs.seed, to_target=inputs.to_target)

    def covers(self, pair: str) -> bool:
        return self.k > 0 and pair in self.thresholds

    def own_k(self, pair: str) -> int:
        """k + 1: the query itself may be among its own-domain neighbours."""
        return self.k + 1 if self.covers(pair) else 0

    def decide(self, evidence: Evidence) -> Decision | None:
        """None without both neighbour lists, or when a side has no neighbour left."""
        if evidence.target_sims is None or evidence.own_sims is None:
            return None
        score = self.score(evidence.own_sims, evidence.target_sims)
        if not math.isfinite(score):
            return None
        source, target = evidence.source, evidence.target
        if score > self.thresholds[evidence.pair]:
            return Decision(False, f"its {source} neighbours are much closer than any {target} item",
                            score, source)
        return Decision(True, f"concept exists in {target}", score, source)

    def score(self, own_sims: np.ndarray, target_sims: np.ndarray) -> float:
        return float(neighbourhood_contrast(np.asarray(own_sims, np.float64).reshape(1, -1),
                                            np.asarray(target_sims, np.float64).reshape(1, -1), self.k)[0])

    def describe(self) -> str | None:
        if not self.thresholds:
            return None
        return f"neighbourhood contrast, k {self.k}, reject above: " + ", ".join(
            f"{p} {v:.3f}" for p, v in sorted(self.thresholds.items()))


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


def contrast_calibration(vectors: dict[str, np.ndarray], k: int = CONTRAST_K, max_queries: int = 5000,
                         seed: int = 0, to_target=None) -> dict:
    """{"k", "thresholds": {"source->target": value}, "queries": {...}}: this rule's record.

    For every ordered pair, every source item (a seeded sample of at most `max_queries`) is scored
    exactly as the engine scores a query (its own item skipped as the engine skips an indexed image
    queried again), and Otsu's method splits the scores into "has a counterpart in target" and
    "private". No label is read; the split only assumes the scores are bimodal when some concepts
    are missing from the target. `vectors`: unit rows per domain, as indexed (aligned).
    `to_target(rows, source, target)`: the bundle's map of a source's rows into a target's space
    (the engine's query path); default identity. A pair is left out (its queries fall back to the
    prototype rule) when the source has fewer than 2 items or the target none."""
    rng = np.random.default_rng(seed)
    thresholds, queries = {}, {}
    for src, v in vectors.items():
        v = np.asarray(v, np.float32)
        if len(v) < 2:
            continue
        rows = sample_rows(rng, len(v), max_queries)
        own = top_cosines(v[rows], v, k + 1)
        for tgt, q, t in target_rows(vectors, src, v[rows], to_target):
            score = neighbourhood_contrast(own, top_cosines(q, t, k), k)
            thresholds[pair_key(src, tgt)] = otsu_threshold(score)
            queries[pair_key(src, tgt)] = int(len(rows))
    return {"k": int(k), "thresholds": thresholds, "queries": queries, "method": "otsu"}
