"""Open-set rejection: does the query's concept exist in the target domain at all?

One interface over three rules. The manifest's calibration names the rule (`"rule"`) and holds its
fitted parameters; export fits them without labels (`uem.export.openset`); the engine asks the rule
what evidence a pair needs (`own_k`: own-domain neighbours; every rule gets the target hits, best
cosine first) and hands it over; `uemctl info` prints `describe()`.

- anchored (default, `anchored.py`): the closest target item against the distances of confident
  matches (mutual nearest neighbours) of the same pair; rejects beyond their (1 - alpha) quantile.
- contrast (`contrast.py`): own-domain neighbours vs target neighbours, Otsu's threshold.
- prototype (`prototype.py`): UEM's prototype links and radii; also the fallback for any pair the
  named rule has no calibration for (e.g. a domain added after export).

Bundles written before the rule was named hold either a "contrast" record (-> contrast) or none
(-> prototype); both read as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import BundleError
from ..geometry import top_n
from ..prototypes import PrototypeGraph
from .anchored import ALPHA, AnchoredRule
from .contrast import CONTRAST_K, SELF_COS, ContrastRule, neighbourhood_contrast
from .prototype import UNLINKED_SCORE, prototype_decision

RULES = ("anchored", "contrast", "prototype")
DEFAULT_RULE = "anchored"

__all__ = ["ALPHA", "CONTRAST_K", "DEFAULT_RULE", "RULES", "SELF_COS", "UNLINKED_SCORE", "Decision",
           "OpenSetRule", "neighbourhood_contrast", "pair_key", "rule_name"]


def pair_key(source: str, target: str) -> str:
    return f"{source}->{target}"


def rule_name(calibration: dict | None) -> str:
    """The rule a manifest's calibration names; older bundles: contrast if calibrated, else prototype."""
    calibration = calibration or {}
    name = calibration.get("rule")
    if name is None:
        return "contrast" if "contrast" in calibration else "prototype"
    if name not in RULES:
        raise BundleError(f"unknown open-set rule {name!r} (this uem knows {', '.join(RULES)})")
    return str(name)


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
        if not isinstance(calibration, dict):
            raise BundleError("invalid open-set calibration (not an object)")
        self.name = rule_name(calibration)
        try:
            scales = calibration.get("radius_scale", {}) or {}
            self.radius_scale = {str(k): float(v) for k, v in scales.items()}
        except (AttributeError, TypeError, ValueError) as e:
            raise BundleError(f"invalid open-set calibration ({e})") from None
        if not all(math.isfinite(v) for v in self.radius_scale.values()):
            raise BundleError("invalid open-set calibration (non-finite radius scale)")
        self.contrast = ContrastRule(calibration.get("contrast") if self.name == "contrast" else None)
        self.anchored = AnchoredRule(calibration.get("anchored") if self.name == "anchored" else None)

    # -- what the engine asks ------------------------------------------------------------------
    @property
    def contrast_k(self) -> int:
        """Target hits the rule reads at most (the engine searches at least this many)."""
        return self.contrast.k

    def uses_contrast(self, source: str | None, target: str) -> bool:
        return self.name == "contrast" and source is not None and self.contrast.covers(pair_key(source, target))

    def own_k(self, source: str | None, target: str) -> int:
        """Own-domain neighbours the pair's decision needs (0: none; k+1 for contrast, the query
        itself may be among them)."""
        return self.contrast.k + 1 if self.uses_contrast(source, target) else 0

    def describe(self) -> str:
        """One line for `uemctl info`."""
        if self.name == "anchored" and self.anchored.grids:
            return self.anchored.describe()
        if self.name == "contrast" and self.contrast.thresholds:
            return self.contrast.describe()
        return "prototype rule (docs/method.md)"

    def infer_source(self, q: np.ndarray) -> str | None:
        """Owner domain of the query's nearest prototype over all domains (None: no prototypes)."""
        if not len(self.graph.centroids):
            return None
        best = int(np.argmax(self.graph.centroids @ np.asarray(q, np.float32)))
        return self.graph.domains[int(self.graph.owner[best])]

    def decide(self, q: np.ndarray, target: str, nearest_cos: float | None,
               source: str | None = None, *, target_sims: np.ndarray | None = None,
               own_sims: np.ndarray | None = None) -> Decision:
        """Accept or reject `q` (unit vector, in its source's space) for `target`; `nearest_cos` =
        cosine to its closest target item (None: the target is empty).

        `target_sims` / `own_sims`: its best cosines in the target / its own domain, best first (own
        may include the query itself); contrast needs both."""
        if source is None:
            source = self.infer_source(q)
        if source == target:
            return Decision(True, "same domain", 0.0, source)
        pair = pair_key(source, target) if source is not None else None
        if self.name == "anchored" and pair is not None and self.anchored.covers(pair) and nearest_cos is not None:
            score = float(self.anchored.score(pair, nearest_cos))
            accepted = not self.anchored.rejects(score)
            return Decision(accepted, self.anchored.reason(source, target, accepted, score, nearest_cos),
                            score, source)
        if self.uses_contrast(source, target) and target_sims is not None and own_sims is not None:
            score = self.contrast.score(own_sims, target_sims)
            if math.isfinite(score):
                if score > self.contrast.thresholds[pair]:
                    return Decision(False, f"its {source} neighbours are much closer than any {target} item",
                                    score, source)
                return Decision(True, f"concept exists in {target}", score, source)
        accepted, reason, score = prototype_decision(self.graph, self.radius_scale, q, source, target,
                                                     nearest_cos)
        return Decision(accepted, reason, score, source)

    def reject_fn(self, own_search: Callable[[str, np.ndarray, int], np.ndarray] | None = None):
        """This rule as `uem.eval`'s reject_fn(query_vectors, query_domain, target_domain,
        target_vectors) -> (accepted bool [n], score float [n]), with exact target neighbours.

        `own_search(domain, vectors, n) -> cosines [len(vectors), <= n]` (best first) finds the
        queries' own-domain neighbours (the engine passes its indexes); without it, pairs decided by
        contrast fall back to the prototype rule. An optional fifth argument, `own_vectors`: the
        queries in their own domain's space (for prototypes and own-domain neighbours) when the
        first is already in the target's space (the engine's alignment)."""

        def reject(query_vectors, query_domain, target_domain, target_vectors, own_vectors=None):
            q = np.asarray(query_vectors, np.float32)
            own_q = q if own_vectors is None else np.asarray(own_vectors, np.float32)
            t = np.asarray(target_vectors, np.float32)
            sims = q @ t.T if len(t) and len(q) else np.zeros((len(q), 0), np.float32)
            nearest = sims.max(axis=1) if sims.shape[1] else [None] * len(q)
            own = tgt = [None] * len(q)
            n_own = self.own_k(query_domain, target_domain)
            if own_search is not None and n_own and len(q):
                own = own_search(query_domain, own_q, n_own)
                tgt = top_n(sims, self.contrast.k)[1]
            ds = [self.decide(v, target_domain, None if c is None else float(c), query_domain,
                              target_sims=ts, own_sims=os_)
                  for v, c, ts, os_ in zip(own_q, nearest, tgt, own)]
            return (np.array([d.accepted for d in ds], dtype=bool),
                    np.array([d.score for d in ds], dtype=np.float64))

        return reject
