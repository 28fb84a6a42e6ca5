"""Simple open-set rejection rules to plug into `evaluate(reject_fn=...)` (numpy only).

They give the open-set metrics a reference point that needs no prototypes: the engine's
prototype-based rule (docs/method.md) should beat "the nearest item is not similar enough".
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
