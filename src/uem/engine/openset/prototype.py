"""UEM's prototype rule (docs/method.md, "Open-set rejection"): `--open-set prototype`, and the
fallback for pairs that no calibrated rule covers (so it covers every pair and always decides).

Take the query's nearest prototype in its source domain. If that prototype was never merged with a
prototype of the target domain, the concept is private to the source -> reject. Otherwise compare
D(q, nearest target item), D(u, v) = (1 - cos) * ||u - v||, with the merge's radius R (largest D
between the two clusters' members, times an optional calibrated per-target factor) -> reject when
farther. The continuous score D / R (> 1 rejects; UNLINKED_SCORE + D for private concepts) ranks
queries for AUROC.

Its record is not fitted: the optional per-target radius factors sit at the top of the manifest's
calibration (`"radius_scale"`), where bundles have always kept them.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BundleError
from ..geometry import uem_distance_from_cos
from ..prototypes import PrototypeGraph
from .base import Decision, Evidence, Rule
from .record import parse_record

UNLINKED_SCORE = 1000.0   # above any D/R of a linked concept; + D keeps the ranking informative
_MIN_RADIUS = 1e-6


def prototype_decision(graph: PrototypeGraph, radius_scale: dict[str, float], q: np.ndarray,
                       source: str, target: str, nearest_cos: float | None) -> tuple[bool, str, float]:
    """(accepted, reason, score) of the prototype rule; accepted with a reason when it cannot run."""
    domains = set(graph.domains)
    if source not in domains or target not in domains:
        missing = source if source not in domains else target
        return True, f"open-set check unavailable: no prototypes for {missing}", 0.0
    own = graph.of_domain(source)
    if not len(own):
        return True, f"open-set check unavailable: no prototypes for {source}", 0.0
    proto = int(own[np.argmax(graph.centroids[own] @ np.asarray(q, np.float32))])
    dist = uem_distance_from_cos(nearest_cos) if nearest_cos is not None else math.inf
    partners = graph.partners(proto, target)
    if not partners:
        score = UNLINKED_SCORE + (dist if math.isfinite(dist) else UNLINKED_SCORE)
        return False, f"nearest concept exists only in {source}", score
    radius = max(r for _, r in partners) * radius_scale.get(target, 1.0)
    score = dist / max(radius, _MIN_RADIUS) if math.isfinite(dist) else UNLINKED_SCORE
    if score > 1.0:
        return False, f"nearest {target} item is farther than this concept's radius", float(score)
    return True, f"concept exists in {target}", float(score)


class PrototypeRule(Rule):
    """The prototype rule over one bundle's graph and optional radius factors."""

    name = "prototype"

    def __init__(self, graph: PrototypeGraph, record: dict | None = None) -> None:
        super().__init__(record)
        scales = parse_record(record, self.name, lambda r: {
            str(k): float(v) for k, v in (r.get("radius_scale", {}) or {}).items()})
        if not all(math.isfinite(v) for v in scales.values()):
            raise BundleError("invalid open-set calibration (non-finite radius scale)")
        self.graph, self.radius_scale = graph, scales

    @classmethod
    def record_in(cls, calibration: dict) -> dict:
        return {"radius_scale": calibration.get("radius_scale", {})}

    @classmethod
    def from_record(cls, record: object, graph: PrototypeGraph) -> "PrototypeRule":
        return cls(graph, record)  # type: ignore[arg-type]

    def covers(self, pair: str) -> bool:
        return True

    def decide(self, evidence: Evidence) -> Decision:
        accepted, reason, score = prototype_decision(self.graph, self.radius_scale, evidence.query,
                                                     evidence.source, evidence.target, evidence.nearest_cos)
        return Decision(accepted, reason, score, evidence.source)

    def describe(self) -> str:
        return "prototype rule (docs/method.md)"
