"""CSLS (Conneau et al. 2018), in one place: the engine's ranking, `uemctl eval`'s score matrix,
and the mutual matches that alignment maps and the "no match" calibration are learnt from.

For a query q from source s, target item t scores 2 cos(q, t) - r_q - r_t, where r_q = mean cosine
of q to its k nearest target items and r_t = mean cosine of t to its k nearest source items. It
demotes "hub" items that are near everything. Numpy only.
"""

from __future__ import annotations

import numpy as np


def csls_scores(cos: np.ndarray, r_query: np.ndarray, r_items: np.ndarray) -> np.ndarray:
    """CSLS = 2 cos - r_query - r_items; cos (Q, N) or per-query candidate rows, r_query (Q,),
    r_items broadcastable to cos (N,) or (Q, N)."""
    cos = np.asarray(cos, np.float64)
    return 2.0 * cos - np.asarray(r_query, np.float64).reshape(-1, 1) - np.asarray(r_items, np.float64)


def mean_top_k(sims: np.ndarray, k: int) -> np.ndarray:
    """Per row, the mean of its k largest finite values (fewer if a row has fewer); 0 for none."""
    sims = np.asarray(sims, np.float64)
    if sims.ndim != 2:
        raise ValueError(f"expected a (Q, N) matrix, got {sims.shape}")
    if sims.shape[1] == 0 or k <= 0:
        return np.zeros(len(sims))
    s = np.where(np.isfinite(sims), sims, -np.inf)
    n = min(int(k), s.shape[1])
    top = np.partition(s, s.shape[1] - n, axis=1)[:, -n:]
    ok = np.isfinite(top)
    return np.where(ok, top, 0.0).sum(1) / np.maximum(ok.sum(1), 1)


def exact_mean_top_k(q: np.ndarray, base: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """mean_top_k(q @ base.T, k) without holding the whole matrix."""
    out = np.zeros(len(q))
    if len(base) == 0:
        return out
    for i in range(0, len(q), chunk):
        out[i:i + chunk] = mean_top_k(q[i:i + chunk] @ base.T, k)
    return out


def candidate_csls(cand_cos: np.ndarray, r_items: np.ndarray, k: int,
                   valid: np.ndarray | None = None) -> np.ndarray:
    """CSLS of each query's candidate items (Q, M): cosines best first or in any order, `r_items`
    the candidates' r_t (same shape). r_q is the mean of a query's k best candidate cosines: the
    candidates are its best items by cosine, so its k nearest are among them. `valid`: which
    candidates exist (a backend may answer with fewer); the others score -inf."""
    cand_cos = np.asarray(cand_cos)
    if valid is None:
        valid = np.ones(cand_cos.shape, bool)
    r_q = mean_top_k(np.where(valid, cand_cos, np.nan), k)
    return np.where(valid, csls_scores(cand_cos, r_q, np.where(valid, r_items, 0.0)), -np.inf)


def mutual_csls_pairs(xa: np.ndarray, xb: np.ndarray, k: int, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Rows (i, j) that are each other's best match under CSLS (unit rows, same space)."""
    ra = exact_mean_top_k(xa, xb, k)
    rb = exact_mean_top_k(xb, xa, k)
    best_b = np.empty(len(xa), np.int64)
    for i in range(0, len(xa), chunk):
        best_b[i:i + chunk] = np.argmax(csls_scores(xa[i:i + chunk] @ xb.T, ra[i:i + chunk], rb), axis=1)
    best_a = np.empty(len(xb), np.int64)
    for j in range(0, len(xb), chunk):
        best_a[j:j + chunk] = np.argmax(csls_scores(xb[j:j + chunk] @ xa.T, rb[j:j + chunk], ra), axis=1)
    i = np.arange(len(xa))
    keep = best_a[best_b] == i
    return i[keep], best_b[keep]
