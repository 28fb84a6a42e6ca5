"""What every "no match" rule is: the one interface the engine, export and `uemctl info` talk to.

Why an interface: the engine must not know which rule a bundle uses. A rule is fitted at export
from the indexed vectors alone (no labels) into a JSON record the manifest keeps under the rule's
name (`calibration[name]`); the engine rebuilds it from that record, asks what evidence a pair
needs (`target_k` best target cosines, `own_k` own-domain ones), hands it over as `Evidence`, and
gets a `Decision` — or None when the evidence is not enough, and the prototype rule (the fallback)
decides. Adding a rule = one module with a `Rule` subclass + its name in `RULES` (`__init__.py`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterator

import numpy as np

from ..geometry import top_n
from ..prototypes import PrototypeGraph

ALPHA = 0.01        # default share of confident matches a rule may wrongly refuse (anchored.py)

# to_target(rows, source, target): a source's aligned rows in the target's space (the engine's path)
ToTarget = Callable[[np.ndarray, str, str], np.ndarray]


def pair_key(source: str, target: str) -> str:
    """How a manifest names an ordered domain pair ("source->target")."""
    return f"{source}->{target}"


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    score: float          # higher = more likely no match, on the deciding rule's own scale
    source: str | None


@dataclass(frozen=True)
class Evidence:
    """What the engine knows about one query when a rule decides it (all cosines best first)."""

    query: np.ndarray                   # unit vector, aligned in its source's space
    source: str | None                  # None only for the fallback, when no domain could be inferred
    target: str
    nearest_cos: float | None           # cosine to the closest target item (None: target empty)
    target_sims: np.ndarray | None = None   # its best target cosines (at least target_k of them)
    own_sims: np.ndarray | None = None      # its best own-domain cosines (may include itself)

    @property
    def pair(self) -> str:
        return pair_key(self.source, self.target)


@dataclass(frozen=True)
class FitInputs:
    """What export hands every rule's `fit`: the bundle's vectors as the engine searches them."""

    vectors: dict[str, np.ndarray]      # unit rows per domain, aligned, as indexed
    to_target: ToTarget | None = None   # None: identity
    seed: int = 0
    alpha: float = ALPHA                # share of confident matches a rule may refuse (if it has one)
    csls_k: int = 10                    # neighbours of the bundle's CSLS (mutual-match rules use it)
    probes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # wild copies


class Rule(ABC):
    """One "no match" rule over one bundle: immutable once built, so queries share it freely."""

    name: ClassVar[str]            # the manifest's calibration["rule"] and the CLI's --open-set
    target_k: int = 1              # target cosines the rule reads at most (the engine searches >= this)

    def __init__(self, record: dict | None = None) -> None:
        self._record = record   # never mutated; to_record hands out a copy

    # -- fitting (export; numpy only, no labels) -------------------------------------------
    @classmethod
    def fit(cls, inputs: FitInputs) -> dict | None:
        """The record this rule stores for a bundle (JSON-ready), or None: nothing to store."""
        return None

    # -- the manifest record -----------------------------------------------------------------
    @classmethod
    def record_in(cls, calibration: dict) -> object:
        """This rule's record in a manifest's calibration object (validated by `from_record`)."""
        return calibration.get(cls.name)

    @classmethod
    def from_record(cls, record: object, graph: PrototypeGraph) -> "Rule":
        """Rebuild from the stored record (None: uncalibrated); BundleError if it is malformed."""
        return cls(record)  # type: ignore[arg-type]

    def to_record(self) -> dict | None:
        """The record this rule was built from, as stored (a copy)."""
        return copy.deepcopy(self._record)

    # -- deciding ----------------------------------------------------------------------------
    def covers(self, pair: str) -> bool:
        """Whether the record calibrates this "source->target" pair (else the fallback decides)."""
        return False

    def own_k(self, pair: str) -> int:
        """Own-domain neighbours a covered pair's decision needs (0: none)."""
        return 0

    @abstractmethod
    def decide(self, evidence: Evidence) -> Decision | None:
        """The decision for a covered pair, or None when this evidence cannot decide it."""

    @abstractmethod
    def describe(self) -> str | None:
        """One line for `uemctl info`; None when the rule holds no calibration."""


# -- helpers the rules' fits share -----------------------------------------------------------------

def top_cosines(q: np.ndarray, base: np.ndarray, n: int, chunk: int = 1024) -> np.ndarray:
    """Exact cosines of each row of q to its n nearest rows of base, best first."""
    out = np.empty((len(q), min(n, len(base))), np.float64)
    for i in range(0, len(q), chunk):
        out[i:i + chunk] = top_n(q[i:i + chunk] @ base.T, n)[1]
    return out


def sample_rows(rng: np.random.Generator, n: int, max_queries: int) -> np.ndarray:
    """The source rows a calibration scores: all of them, or a seeded sorted sample of max_queries."""
    return np.sort(rng.choice(n, max_queries, replace=False)) if n > max_queries else np.arange(n)


def target_rows(vectors: dict[str, np.ndarray], src: str, rows: np.ndarray,
                to_target: ToTarget | None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(target, the source rows mapped into its space, its rows) for every other non-empty domain."""
    for tgt, t in vectors.items():
        if tgt == src or len(t) == 0:
            continue
        yield tgt, (rows if to_target is None else to_target(rows, src, tgt)), np.asarray(t, np.float32)
