"""What the evaluation tests share: a reject_fn that needs no prototypes.

The harness takes any `reject_fn(query_vectors, query_domain, target_domain, target_vectors) ->
(accept, score)`; the product's rule is the engine's (uem.engine.openset). This one ("the nearest
target item is not similar enough") is the simplest rule with that shape, so the harness and report
tests can drive the open-set path with answers worked out by hand.
"""

from __future__ import annotations

import numpy as np


def nearest_similarity_score(query_vectors: np.ndarray, target_vectors: np.ndarray) -> np.ndarray:
    """1 - (cosine to the nearest target item): higher = more likely that no match exists."""
    if len(target_vectors) == 0:
        return np.ones(len(query_vectors))
    return 1.0 - (np.asarray(query_vectors) @ np.asarray(target_vectors).T).max(axis=1).astype(np.float64)


def threshold_rejector(max_distance: float):
    """reject_fn that rejects a query when 1 - (its best cosine) exceeds `max_distance`."""

    def reject(query_vectors, query_domain, target_domain, target_vectors):
        score = nearest_similarity_score(query_vectors, target_vectors)
        return score <= max_distance, score

    return reject
