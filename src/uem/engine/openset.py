"""Open-set rejection: does the query's concept exist in the target domain at all?

Two rules; the bundle's calibration says which one a domain pair uses.

Neighbourhood contrast (the default of `uemctl export`): score = mean cosine of the query's k nearest
items in its OWN domain - mean cosine of its k nearest items in the TARGET domain; reject when the
score is above the pair's threshold, which export sets without labels (Otsu's split of the scores
of all source items, `uem.export.openset`). Why: the bundle's embedding keeps a domain gap, so "how
close is the nearest target item" mostly measures how crowded the query's region is; measuring it
against the query's own-domain neighbours cancels that. On emoji3's open-set splits it ranks private
queries with AUROC 0.68-0.78 where the prototype rule reaches 0.63-0.66 (benchmarks/RESULTS.md).

Prototype rule (UEM-METHOD.md, "Open-set rejection"; `--open-set prototype`, and the fallback for
pairs without a threshold): take the query's nearest prototype in its source domain. If that
prototype was never merged with a prototype of the target domain, the concept is private to the
source -> reject. Otherwise compare D(q, nearest target item), D(u, v) = (1 - cos) * ||u - v||
(`uem.engine.geometry`), with the merge's radius R (largest D between the two clusters' members, times
an optional calibrated per-target factor) -> reject when farther. The continuous score D / R (> 1
rejects; UNLINKED_SCORE + D for private concepts) ranks queries for AUROC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import BundleError
from .geometry import top_n, uem_distance_from_cos
from .prototypes import PrototypeGraph

UNLINKED_SCORE = 1000.0   # above any D/R of a linked concept; + D keeps the ranking informative
_MIN_RADIUS = 1e-6
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


def pair_key(source: str, target: str) -> str:
    return f"{source}->{target}"


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    score: float
    source: str | None


class OpenSetRule:
    """The decision over one bundle's prototype graph and calibration (immutable, thread-safe)."""

    def __init__(self, graph: PrototypeGraph, calibration: dict | None = None) -> None:
        self.graph = graph
        calibration = calibration or {}
        try:
            scales = calibration.get("radius_scale", {}) or {}
            self.radius_scale = {str(k): float(v) for k, v in scales.items()}
            contrast = calibration.get("contrast", {})
            if not isinstance(contrast, dict):
                raise TypeError("contrast must be an object")
            self.contrast_k = int(contrast.get("k", CONTRAST_K)) if contrast else 0
            self.thresholds = {str(k): float(v) for k, v in (contrast.get("thresholds") or {}).items()}
        except (AttributeError, TypeError, ValueError) as e:
            raise BundleError(f"invalid open-set calibration ({e})") from None
        if self.contrast_k < 0 or not all(math.isfinite(v) for v in
                                          [*self.radius_scale.values(), *self.thresholds.values()]):
            raise BundleError("invalid open-set calibration (negative k or non-finite value)")
        self._domain_index = {d: i for i, d in enumerate(graph.domains)}

    def uses_contrast(self, source: str | None, target: str) -> bool:
        """Whether (source, target) is decided by neighbourhood contrast (else by prototypes)."""
        return self.contrast_k > 0 and source is not None and pair_key(source, target) in self.thresholds

    def infer_source(self, q: np.ndarray) -> str | None:
        """Owner domain of the query's nearest prototype over all domains (None: no prototypes)."""
        if not len(self.graph.centroids):
            return None
        best = int(np.argmax(self.graph.centroids @ np.asarray(q, np.float32)))
        return self.graph.domains[int(self.graph.owner[best])]

    def decide(self, q: np.ndarray, target: str, nearest_cos: float | None,
               source: str | None = None, *, target_sims: np.ndarray | None = None,
               own_sims: np.ndarray | None = None) -> Decision:
        """Accept or reject `q` (unit vector) for `target`; `nearest_cos` = cos to its top-1 hit.

        `target_sims` / `own_sims`: its best cosines in the target / its own domain, best first (own
        may include the query itself); with both and a calibrated pair, neighbourhood contrast decides.
        """
        if source is None:
            source = self.infer_source(q)
        if source == target:
            return Decision(True, "same domain", 0.0, source)
        if self.uses_contrast(source, target) and target_sims is not None and own_sims is not None:
            score = float(neighbourhood_contrast(np.asarray(own_sims, np.float64).reshape(1, -1),
                                                 np.asarray(target_sims, np.float64).reshape(1, -1),
                                                 self.contrast_k)[0])
            if math.isfinite(score):
                if score > self.thresholds[pair_key(source, target)]:
                    return Decision(False, f"its {source} neighbours are much closer than any {target} item",
                                    score, source)
                return Decision(True, f"concept exists in {target}", score, source)
        if source not in self._domain_index or target not in self._domain_index:
            missing = source if source not in self._domain_index else target
            return Decision(True, f"open-set check unavailable: no prototypes for {missing}",
                            0.0, source)
        own = self.graph.of_domain(source)
        if not len(own):
            return Decision(True, f"open-set check unavailable: no prototypes for {source}", 0.0, source)
        proto = int(own[np.argmax(self.graph.centroids[own] @ np.asarray(q, np.float32))])
        dist = uem_distance_from_cos(nearest_cos) if nearest_cos is not None else math.inf
        partners = self.graph.partners(proto, target)
        if not partners:
            score = UNLINKED_SCORE + (dist if math.isfinite(dist) else UNLINKED_SCORE)
            return Decision(False, f"nearest concept exists only in {source}", score, source)
        radius = max(r for _, r in partners) * self.radius_scale.get(target, 1.0)
        score = dist / max(radius, _MIN_RADIUS) if math.isfinite(dist) else UNLINKED_SCORE
        if score > 1.0:
            return Decision(False, f"nearest {target} item is farther than this concept's radius",
                            float(score), source)
        return Decision(True, f"concept exists in {target}", float(score), source)

    def reject_fn(self, own_search: Callable[[str, np.ndarray, int], np.ndarray] | None = None,
                  pre_aligned: bool = False):
        """This rule as `uem.eval`'s reject_fn(query_vectors, query_domain, target_domain,
        target_vectors) -> (accepted bool [n], score float [n]), with exact target neighbours.

        `own_search(domain, vectors, n) -> cosines [len(vectors), <= n]` (best first) finds the
        queries' own-domain neighbours (the engine passes its indexes); without it, or for pairs
        without a contrast threshold, the prototype rule decides. `pre_aligned`: the function takes
        a fifth argument, the queries in their own domain's space (for prototypes and own-domain
        neighbours), while the first is already in the target's space (the engine's alignment)."""

        def reject(query_vectors, query_domain, target_domain, target_vectors, own_vectors=None):
            q = np.asarray(query_vectors, np.float32)
            own_q = q if own_vectors is None else np.asarray(own_vectors, np.float32)
            t = np.asarray(target_vectors, np.float32)
            sims = q @ t.T if len(t) and len(q) else np.zeros((len(q), 0), np.float32)
            nearest = sims.max(axis=1) if sims.shape[1] else [None] * len(q)
            kc = self.contrast_k
            own = tgt = [None] * len(q)
            if own_search is not None and self.uses_contrast(query_domain, target_domain) and len(q):
                own = own_search(query_domain, own_q, kc + 1)
                tgt = top_n(sims, kc)[1]
            ds = [self.decide(v, target_domain, None if c is None else float(c), query_domain,
                              target_sims=ts, own_sims=os_)
                  for v, c, ts, os_ in zip(own_q, nearest, tgt, own)]
            return (np.array([d.accepted for d in ds], dtype=bool),
                    np.array([d.score for d in ds], dtype=np.float64))

        if pre_aligned:
            return reject
        return lambda q, qd, td, t: reject(q, qd, td, t)
