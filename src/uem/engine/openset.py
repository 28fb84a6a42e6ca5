"""Open-set rejection: does the query's concept exist in the target domain at all?

UEM-METHOD.md, "Open-set rejection": take the query's nearest prototype in its source domain. If
that prototype was never merged with a prototype of the target domain, the concept is private to
the source -> reject. Otherwise compare D(q, nearest target item), D(u, v) = (1 - cos) * ||u - v||,
with the merge's radius R (largest D between the two clusters' members, times an optional
calibrated per-target factor) -> reject when farther. The continuous score D / R (> 1 rejects;
UNLINKED_SCORE + D for private concepts) ranks queries for AUROC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .prototypes import PrototypeGraph

UNLINKED_SCORE = 1000.0   # above any D/R of a linked concept; + D keeps the ranking informative
_MIN_RADIUS = 1e-6


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    score: float
    source: str | None


def uem_distance_from_cos(cos: float) -> float:
    """D(u, v) = (1 - cos) * ||u - v|| for unit vectors, where ||u - v|| = sqrt(2 - 2 cos)."""
    cos = min(1.0, max(-1.0, float(cos)))
    return (1.0 - cos) * math.sqrt(max(0.0, 2.0 - 2.0 * cos))


def uem_distance(u: np.ndarray, v: np.ndarray) -> float:
    """D(u, v) for any two vectors (the training-side definition)."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    cos = float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))
    return (1.0 - cos) * float(np.linalg.norm(u - v))


class OpenSetRule:
    """The decision over one bundle's prototype graph and calibration (immutable, thread-safe)."""

    def __init__(self, graph: PrototypeGraph, calibration: dict | None = None) -> None:
        self.graph = graph
        scales = (calibration or {}).get("radius_scale", {}) or {}
        self.radius_scale = {str(k): float(v) for k, v in scales.items()}
        self._domain_index = {d: i for i, d in enumerate(graph.domains)}

    def infer_source(self, q: np.ndarray) -> str | None:
        """Owner domain of the query's nearest prototype over all domains (None: no prototypes)."""
        if not len(self.graph.centroids):
            return None
        best = int(np.argmax(self.graph.centroids @ np.asarray(q, np.float32)))
        return self.graph.domains[int(self.graph.owner[best])]

    def decide(self, q: np.ndarray, target: str, nearest_cos: float | None,
               source: str | None = None) -> Decision:
        """Accept or reject `q` (unit vector) for `target`; `nearest_cos` = cos to its top-1 hit."""
        if source is None:
            source = self.infer_source(q)
        if source == target:
            return Decision(True, "same domain", 0.0, source)
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

    def reject_fn(self):
        """This rule as `uem.eval`'s reject_fn(query_vectors, query_domain, target_domain,
        target_vectors) -> (accepted bool [n], score float [n]), with exact nearest neighbours."""

        def reject(query_vectors, query_domain, target_domain, target_vectors):
            q = np.asarray(query_vectors, np.float32)
            t = np.asarray(target_vectors, np.float32)
            nearest = (q @ t.T).max(axis=1) if len(t) and len(q) else [None] * len(q)
            ds = [self.decide(v, target_domain, None if c is None else float(c), query_domain)
                  for v, c in zip(q, nearest)]
            return (np.array([d.accepted for d in ds], dtype=bool),
                    np.array([d.score for d in ds], dtype=np.float64))

        return reject
