"""Close / partial / open-set category splits (docs/benchmarks.md "Protocols"), seeded and reproducible.

For an ordered pair query domain Q -> retrieval domain R:
- close:   Q and R keep all their categories.
- partial: Q keeps a random half of the categories, R keeps all.
- open:    R keeps a random half of the categories, Q keeps all; Q's categories missing from R are
           *private* (the right answer for those queries is "no match").

"A random half" is drawn from the sorted UNION of Q's and R's categories, so one seed drops the same
categories whatever the pair (and whichever domain lacks a category): half = ceil(n / 2) categories,
i.e. (n + 1) // 2 — an odd count keeps the larger half, so one category is never split down to none.
The draw is `numpy.random.default_rng(seed).permutation(n)[:half]` over that sorted list, so it
depends only on (categories, seed), never on the order they were found in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

PROTOCOLS = ("close", "partial", "open")


def half(n: int) -> int:
    """How many of n categories "a random half" keeps: ceil(n / 2)."""
    return (int(n) + 1) // 2


def random_half(categories: Iterable[str], seed: int) -> list[str]:
    """A seeded random half (ceil) of the distinct categories, returned sorted."""
    universe = sorted(set(map(str, categories)))
    pick = np.random.default_rng(seed).permutation(len(universe))[: half(len(universe))]
    return sorted(universe[i] for i in pick)


@dataclass(frozen=True)
class CategorySplit:
    """Which categories the query side and the retrieval side keep, for one protocol and seed."""

    protocol: str
    seed: int
    query: tuple[str, ...]       # categories whose images are used as queries
    retrieval: tuple[str, ...]   # categories whose images stay in the retrieval domain

    @property
    def shared(self) -> tuple[str, ...]:
        """Query categories that exist in the retrieval domain."""
        r = set(self.retrieval)
        return tuple(c for c in self.query if c in r)

    @property
    def private(self) -> tuple[str, ...]:
        """Query categories with no counterpart in the retrieval domain."""
        r = set(self.retrieval)
        return tuple(c for c in self.query if c not in r)

    def query_mask(self, categories) -> np.ndarray:
        """Boolean mask over query images (given their categories): kept as queries."""
        return np.isin(np.asarray(categories).astype(str), np.asarray(self.query, dtype=str))

    def retrieval_mask(self, categories) -> np.ndarray:
        """Boolean mask over retrieval images (given their categories): kept in the searched set."""
        return np.isin(np.asarray(categories).astype(str), np.asarray(self.retrieval, dtype=str))

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "seed": self.seed,
                "query_categories": list(self.query), "retrieval_categories": list(self.retrieval),
                "shared": list(self.shared), "private": list(self.private)}


def split_categories(query_categories: Iterable[str], retrieval_categories: Iterable[str],
                     protocol: str = "close", seed: int = 0) -> CategorySplit:
    """The categories Q and R keep under `protocol` (close | partial | open) with `seed`."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    q = sorted(set(map(str, query_categories)))
    r = sorted(set(map(str, retrieval_categories)))
    if protocol == "close":
        return CategorySplit(protocol, int(seed), tuple(q), tuple(r))
    chosen = set(random_half(set(q) | set(r), seed))
    if protocol == "partial":
        return CategorySplit(protocol, int(seed), tuple(c for c in q if c in chosen), tuple(r))
    return CategorySplit(protocol, int(seed), tuple(q), tuple(c for c in r if c in chosen))
