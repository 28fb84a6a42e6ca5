"""Open-set rejection: does the query's concept exist in the target domain at all?

Every rule implements `base.Rule` and is listed in `RULES` (name -> class), the one place a new
rule is registered. The manifest's calibration names the bundle's rule (`"rule"`) and holds its
fitted record under that name; export fits it without labels (`Rule.fit`, called by
`uem.export.fit`); `OpenSetRule` is what the engine holds: the named rule, and the prototype rule
for every pair the named one does not cover or cannot decide (e.g. a domain added after export).
The engine asks it what evidence a pair needs (`own_k`: own-domain neighbours; every rule gets the
target hits, best cosine first) and hands it over; `uemctl info` prints `describe()`.

- anchored (default, `anchored.py`): the closest target item against the distances of confident
  matches (mutual nearest neighbours) of the same pair; rejects beyond their (1 - alpha) quantile.
- contrast (`contrast.py`): own-domain neighbours vs target neighbours, Otsu's threshold.
- prototype (`prototype.py`): UEM's prototype links and radii; also the fallback.

Bundles written before the rule was named hold either a "contrast" record (-> contrast) or none
(-> prototype); both read as before.
"""

from __future__ import annotations

import numpy as np

from ..errors import BundleError
from ..prototypes import PrototypeGraph
from .anchored import AnchoredRule
from .base import ALPHA, Decision, Evidence, FitInputs, Rule, pair_key
from .contrast import CONTRAST_K, SELF_COS, ContrastRule, neighbourhood_contrast
from .prototype import UNLINKED_SCORE, PrototypeRule

# name -> rule, in the order the CLI lists them; the first is export's default
RULES: dict[str, type[Rule]] = {cls.name: cls for cls in (AnchoredRule, ContrastRule, PrototypeRule)}
DEFAULT_RULE = "anchored"
FALLBACK_RULE = "prototype"

__all__ = ["ALPHA", "CONTRAST_K", "DEFAULT_RULE", "RULES", "SELF_COS", "UNLINKED_SCORE", "Decision",
           "Evidence", "FitInputs", "OpenSetRule", "Rule", "fit_calibration", "neighbourhood_contrast",
           "pair_key", "register", "rule_name"]


def register(cls: type[Rule]) -> type[Rule]:
    """Make a rule known by its name (usable as a decorator); a taken name is a ValueError."""
    if cls.name in RULES and RULES[cls.name] is not cls:
        raise ValueError(f"an open-set rule named {cls.name!r} is already registered")
    RULES[cls.name] = cls
    return cls


def rule_name(calibration: dict | None) -> str:
    """The rule a manifest's calibration names; older bundles: contrast if calibrated, else prototype."""
    calibration = calibration or {}
    name = calibration.get("rule")
    if name is None:
        return "contrast" if "contrast" in calibration else FALLBACK_RULE
    if name not in RULES:
        raise BundleError(f"unknown open-set rule {name!r} (this uem knows {', '.join(RULES)})")
    return str(name)


def fit_calibration(name: str, inputs: FitInputs) -> dict:
    """The manifest's calibration object for rule `name` fitted on `inputs`: {"rule": name} plus
    the rule's record under its name (none for a rule that stores nothing)."""
    if name not in RULES:
        raise ValueError(f"unknown open-set rule {name!r} (known: {', '.join(RULES)})")
    calibration: dict = {"rule": name}
    record = RULES[name].fit(inputs)
    if record is not None:
        calibration[name] = record
    return calibration


class OpenSetRule:
    """The decision over one bundle's prototype graph and calibration (immutable, thread-safe)."""

    def __init__(self, graph: PrototypeGraph, calibration: dict | None = None) -> None:
        self.graph = graph
        calibration = calibration or {}
        if not isinstance(calibration, dict):
            raise BundleError("invalid open-set calibration (not an object)")
        self.name = rule_name(calibration)
        self.fallback = PrototypeRule.from_record(PrototypeRule.record_in(calibration), graph)
        cls = RULES[self.name]
        self.rule: Rule = self.fallback if cls is PrototypeRule else cls.from_record(cls.record_in(calibration), graph)

    # -- what the engine asks ------------------------------------------------------------------
    @property
    def target_k(self) -> int:
        """Target hits the rule reads at most (the engine searches at least this many)."""
        return self.rule.target_k

    def covers(self, source: str | None, target: str) -> bool:
        """Whether the named rule (not the fallback) decides this pair."""
        return source is not None and self.rule.covers(pair_key(source, target))

    def own_k(self, source: str | None, target: str) -> int:
        """Own-domain neighbours the pair's decision needs (0: none)."""
        return self.rule.own_k(pair_key(source, target)) if self.covers(source, target) else 0

    def describe(self) -> str:
        """One line for `uemctl info`."""
        return self.rule.describe() or self.fallback.describe()

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
        may include the query itself); a rule with `own_k` > 0 needs both."""
        if source is None:
            source = self.infer_source(q)
        if source == target:
            return Decision(True, "same domain", 0.0, source)
        evidence = Evidence(q, source, target, nearest_cos, target_sims, own_sims)
        if self.covers(source, target):
            decision = self.rule.decide(evidence)
            if decision is not None:
                return decision
        return self.fallback.decide(evidence)
