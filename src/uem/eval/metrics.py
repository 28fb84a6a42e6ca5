"""Retrieval and open-set metrics (numpy only, so the engine and the CLI can use them).

Ranking metrics work on a score matrix S [n_queries, n_items] (higher = more similar) and a boolean
relevance matrix of the same shape, all queries at once.

Ties. A score tie has no "right" order, and breaking it by item order would reward an embedding that
gives every item the same vector (items of one category sit next to each other on disk). So every
ranking metric here is the EXPECTED value over a uniformly random order inside each group of tied
scores (McSherry & Najork, ECIR 2008). Without ties this is exactly the usual definition.
- P@k and top-1: an item in a tie group counts as (relevant items in the group) / (group size).
- AP: a tie group at ranks a+1..a+n holding m relevant items, with c relevant items above it,
  contributes (m/n) * sum_{j=1..n} (c + 1 + (j-1)(m-1)/(n-1)) / (a+j)   [(m-1)/(n-1) := 0 if n = 1].
- AUROC: ties get their average rank (the Mann-Whitney statistic; equals sklearn's roc_auc_score).
Queries with no relevant item get NaN (they are left out of the means, and counted by the caller).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = [
    "Ranking", "average_precision", "precision_from_expected", "precision_at_k", "top1_accuracy", "relevance",
    "mean_ignoring_nan", "class_balanced_mean", "retrieval_metrics",
    "private_detection_accuracy", "known_acceptance_rate", "h_score", "auroc", "roc_curve",
    "open_set_metrics",
]


def relevance(query_labels: Sequence, item_labels: Sequence) -> np.ndarray:
    """Boolean [n_queries, n_items]: item has the query's label (labels: any hashable, e.g. str)."""
    q = np.asarray(query_labels)
    r = np.asarray(item_labels)
    _, inv = np.unique(np.concatenate([q.astype(str), r.astype(str)]), return_inverse=True)
    qi, ri = inv[: len(q)], inv[len(q):]
    return qi[:, None] == ri[None, :]


class Ranking:
    """Each query's items sorted by score, with the tie groups found once and reused by every metric.

    Rows without ties (nearly all, for float embeddings) take the plain formulas; only rows that do
    have ties pay for the tie-group bookkeeping.
    """

    def __init__(self, scores: np.ndarray):
        s = np.asarray(scores)
        if not np.issubdtype(s.dtype, np.floating):
            s = s.astype(np.float64)
        if s.ndim != 2:
            raise ValueError(f"scores must be 2-D [queries, items], got shape {s.shape}")
        if not np.all(np.isfinite(s)):
            raise ValueError("scores contain NaN or infinity")
        self.shape = s.shape
        n, m = s.shape
        # Any order inside a tie group gives the same (expected) metrics, so the fast sort is fine.
        self.order = np.argsort(-s, axis=1)
        self.tied_rows = np.zeros(0, dtype=np.int64)
        self.start = self.end = np.zeros((0, m), dtype=np.int64)
        if m < 2:
            return
        ss = np.take_along_axis(s, self.order, axis=1)
        tied = ss[:, 1:] == ss[:, :-1]
        self.tied_rows = np.flatnonzero(tied.any(axis=1))
        if not len(self.tied_rows):
            return
        tied = tied[self.tied_rows]
        t = len(self.tied_rows)
        pos = np.broadcast_to(np.arange(m), (t, m))
        new_group = np.ones((t, m), dtype=bool)
        new_group[:, 1:] = ~tied
        group_end = np.ones((t, m), dtype=bool)
        group_end[:, :-1] = ~tied
        # first / last sorted position of the tie group each sorted position belongs to
        self.start = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
        self.end = np.minimum.accumulate(np.where(group_end, pos, m - 1)[:, ::-1], axis=1)[:, ::-1]

    def _sorted(self, relevant: np.ndarray) -> np.ndarray:
        rel = np.asarray(relevant, dtype=bool)
        if rel.shape != self.shape:
            raise ValueError(f"relevance shape {rel.shape} does not match scores {self.shape}")
        return np.take_along_axis(rel, self.order, axis=1)

    def _tied_stats(self, r: np.ndarray):
        """For the tied rows of sorted relevance r: relevant before the group, inside it, group size."""
        rt = r[self.tied_rows].astype(np.float64)
        cum = np.cumsum(rt, axis=1)
        before = np.take_along_axis(cum - rt, self.start, axis=1)
        inside = np.take_along_axis(cum, self.end, axis=1) - before
        size = (self.end - self.start + 1).astype(np.float64)
        return before, inside, size

    def expected_relevance(self, relevant: np.ndarray) -> np.ndarray:
        """[n, m] in sorted order: chance that the item at each rank is relevant (1/0 without ties)."""
        r = self._sorted(relevant)
        e = r.astype(np.float64)
        if len(self.tied_rows):
            _, inside, size = self._tied_stats(r)
            e[self.tied_rows] = inside / size
        return e

    def average_precision(self, relevant: np.ndarray) -> np.ndarray:
        """AP per query over the whole ranking (mAP@All); NaN where a query has no relevant item."""
        r = self._sorted(relevant)
        n_rel = r.sum(axis=1)
        ap = np.full(r.shape[0], np.nan)
        if r.shape[1] == 0:
            return ap
        rank = np.arange(1, r.shape[1] + 1, dtype=np.float64)           # a + j
        # plain AP: precision at each relevant rank = (relevant so far) / rank
        hits = np.cumsum(r, axis=1, dtype=np.int32)
        total = np.where(r, hits / rank, 0.0).sum(axis=1)
        if len(self.tied_rows):
            before, inside, size = self._tied_stats(r)
            j = rank - self.start                                        # 1-based position in group
            slope = np.divide(inside - 1, size - 1, out=np.zeros_like(size), where=size > 1)
            total[self.tied_rows] = ((inside / size) * (before + 1 + (j - 1) * slope) / rank).sum(axis=1)
        ok = n_rel > 0
        ap[ok] = total[ok] / n_rel[ok]
        return ap

    def precision_at(self, relevant: np.ndarray, k: int) -> np.ndarray:
        """Expected share of relevant items in the top k (k clamped to the number of items)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return precision_from_expected(self.expected_relevance(relevant), k)

    def top1(self, correct: np.ndarray) -> np.ndarray:
        """Expected correctness of the first hit; NaN where no correct item exists for a query."""
        rel = np.asarray(correct, dtype=bool)
        if rel.shape != self.shape:
            raise ValueError(f"relevance shape {rel.shape} does not match scores {self.shape}")
        out = np.full(self.shape[0], np.nan)
        if self.shape[1] == 0:
            return out
        first = np.take_along_axis(rel, self.order[:, :1], axis=1)[:, 0].astype(np.float64)
        for row, end in zip(self.tied_rows, self.end[:, 0]):   # the top tie group of tied rows
            first[row] = rel[row, self.order[row, : end + 1]].mean()
        has = rel.any(axis=1)
        out[has] = first[has]
        return out


def precision_from_expected(e: np.ndarray, k: int) -> np.ndarray:
    """P@k from `Ranking.expected_relevance` (k clamped to the number of items); reuse for many k."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    kk = min(int(k), e.shape[1])
    if kk == 0:
        return np.full(e.shape[0], np.nan)
    return e[:, :kk].mean(axis=1)


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """AP per query (tie-aware, see module doc); NaN for queries without a relevant item."""
    return Ranking(scores).average_precision(relevant)


def precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """P@k per query (tie-aware)."""
    return Ranking(scores).precision_at(relevant, k)


def top1_accuracy(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Is the first hit correct, per query (tie-aware); NaN where nothing is correct."""
    return Ranking(scores).top1(correct)


def mean_ignoring_nan(values: np.ndarray) -> float:
    """Mean over the finite entries; NaN when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def class_balanced_mean(values: np.ndarray, labels: Sequence) -> float:
    """Mean per label, then across labels (NaN entries dropped first; labels left empty ignored)."""
    v = np.asarray(values, dtype=np.float64)
    lab = np.asarray(labels).astype(str)
    ok = np.isfinite(v)
    if not ok.any():
        return float("nan")
    _, inv = np.unique(lab[ok], return_inverse=True)
    sums = np.bincount(inv, weights=v[ok])
    counts = np.bincount(inv)
    return float(np.mean(sums / counts))


def retrieval_metrics(scores: np.ndarray, query_labels: Sequence, item_labels: Sequence,
                      query_ids: Sequence | None = None, item_ids: Sequence | None = None,
                      ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Everything docs/benchmarks.md asks of one query->retrieval pair, from one score matrix.

    Returns summary numbers (map, map_class_balanced, top1_identity, p_at_k) plus the per-query arrays
    (ap, top1, p_at_k_per_query) and counts: n_scored = queries whose label exists among the items,
    n_identity = queries whose identity exists among the items.
    """
    ranking = Ranking(scores)
    rel = relevance(query_labels, item_labels)
    ap = ranking.average_precision(rel)
    out = {
        "n_queries": int(ranking.shape[0]),
        "n_items": int(ranking.shape[1]),
        "n_scored": int(np.isfinite(ap).sum()),
        "map": mean_ignoring_nan(ap),
        "map_class_balanced": class_balanced_mean(ap, query_labels),
        "p_at_k": {},
        "ap": ap,
        "p_at_k_per_query": {},
    }
    scored = np.isfinite(ap)
    expected = ranking.expected_relevance(rel)
    for k in ks:
        p = precision_from_expected(expected, k)
        p[~scored] = np.nan  # P@k only for queries whose category exists among the items
        out["p_at_k"][int(k)] = mean_ignoring_nan(p)
        out["p_at_k_per_query"][int(k)] = p
    if query_ids is not None and item_ids is not None:
        t1 = ranking.top1(relevance(query_ids, item_ids))
        out["top1"] = t1
        out["n_identity"] = int(np.isfinite(t1).sum())
        out["top1_identity"] = mean_ignoring_nan(t1)
    return out


# ---- open set ---------------------------------------------------------------------------------

def _bools(accepted, is_private):
    a = np.asarray(accepted, dtype=bool).reshape(-1)
    p = np.asarray(is_private, dtype=bool).reshape(-1)
    if a.shape != p.shape:
        raise ValueError(f"accepted has {a.size} entries, is_private {p.size}")
    return a, p


def private_detection_accuracy(accepted, is_private) -> float:
    """Share of private queries (no match exists) that were rejected; NaN if there are none."""
    a, p = _bools(accepted, is_private)
    return float(np.mean(~a[p])) if p.any() else float("nan")


def known_acceptance_rate(accepted, is_private) -> float:
    """Share of shared-category queries that were accepted; NaN if there are none."""
    a, p = _bools(accepted, is_private)
    return float(np.mean(a[~p])) if (~p).any() else float("nan")


def h_score(detection: float, acceptance: float) -> float:
    """Harmonic mean of detection and acceptance: high only when both are (0 if either is 0)."""
    if not (np.isfinite(detection) and np.isfinite(acceptance)):
        return float("nan")
    if detection + acceptance == 0:
        return 0.0
    return float(2 * detection * acceptance / (detection + acceptance))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    new = np.ones(len(x), dtype=bool)
    new[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(x)))
    avg = starts + (counts + 1) / 2.0
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, counts)
    return ranks


def auroc(score, is_positive) -> float:
    """Probability a random positive scores above a random negative (ties count 1/2); NaN if a class is empty."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    y = np.asarray(is_positive, dtype=bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"score has {s.size} entries, labels {y.size}")
    if not np.all(np.isfinite(s)):
        raise ValueError("score contains NaN or infinity")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(score, is_positive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate, thresholds), one point per distinct score, from (0, 0)."""
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    y = np.asarray(is_positive, dtype=bool).reshape(-1)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.ones(len(s), dtype=bool)
    last[:-1] = s[1:] != s[:-1]
    tp = np.cumsum(y)[last].astype(np.float64)
    fp = np.cumsum(~y)[last].astype(np.float64)
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    fpr = np.concatenate([[0.0], fp / n_neg])
    tpr = np.concatenate([[0.0], tp / n_pos])
    thr = np.concatenate([[np.inf], s[last]])
    return fpr, tpr, thr


def open_set_metrics(accepted, score, is_private) -> dict:
    """Detection, acceptance, H-score and AUROC of the rejection score (higher = more likely private)."""
    a, p = _bools(accepted, is_private)
    det = private_detection_accuracy(a, p)
    acc = known_acceptance_rate(a, p)
    return {
        "n_private": int(p.sum()),
        "n_shared": int((~p).sum()),
        "private_detection": det,
        "known_acceptance": acc,
        "h_score": h_score(det, acc),
        "auroc": auroc(score, p),
    }
