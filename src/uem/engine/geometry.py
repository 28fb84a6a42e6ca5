"""The vector geometry the runtime, export and training share (numpy only).

Why one module: UEM's distance D, unit-length rows and best-first top-n selection were written out
again in the open-set rule, the prototype builder, the index benchmarks and the engine, and the copies
had begun to differ in small ways (epsilons, dtypes, what happens to an all-zero row). Here each is
written once. Training's torch losses keep a torch twin of D (`uem.train.losses.pairwise_d_distance`,
differentiable), tested to agree with this one (tests/test_geometry.py).

D(u, v) = (1 - cos(u, v)) * ||u - v|| (docs/method.md, SN2M search distance and open-set radius): 0 for
equal vectors, small for vectors close both in angle and in length, and, for unit vectors, a function
of the cosine alone (`uem_distance_from_cos`).
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-12  # norms below this count as zero (no division by ~0)
_UNIT_TOL_FLOAT32 = 1e-6  # what bundles have always taken for "already unit length" in float32


def _unit_tolerance(dtype: np.dtype) -> float:
    """|norm - 1| below which a row already counts as unit length: 1e-6 in float32 (the bundle
    writer's rule since format 1), 8 ulp in other float types (float64 rows made unit in float32
    are still re-divided, as the float64 prototype code always did)."""
    dtype = np.dtype(dtype)
    return _UNIT_TOL_FLOAT32 if dtype == np.float32 else 8.0 * float(np.finfo(dtype).eps)


# -- unit rows -------------------------------------------------------------------------------------
def unit_rows(x: np.ndarray, dtype: type = np.float32, *, allow_zero: bool = True) -> np.ndarray:
    """Rows (the last axis) scaled to unit length, as `dtype` (C-contiguous).

    A row that is already unit length (see `_unit_tolerance`) keeps its bits: dividing it again
    would change its last bits on every rewrite (a bundle realigned or re-saved must store the
    vectors it read). An all-zero row stays zero (cosine 0 to everything); with allow_zero=False it
    raises ValueError instead. NaN rows stay NaN (callers that refuse them check first). When no row
    changes, the result may be `x` itself.
    """
    v = np.ascontiguousarray(x, dtype=dtype)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    if not allow_zero and np.any(norms < EPS):
        raise ValueError("a vector has zero length")
    is_unit = np.abs(norms - 1) < _unit_tolerance(v.dtype)
    if np.all(is_unit):
        return v
    return np.ascontiguousarray(np.where(is_unit, v, v / np.maximum(norms, EPS)), dtype=dtype)


# -- UEM's distance D ------------------------------------------------------------------------------
def uem_distance(u: np.ndarray, v: np.ndarray) -> float | np.ndarray:
    """D(u, v) = (1 - cos(u, v)) * ||u - v|| for any vectors, row-wise over the last axis (numpy
    broadcasting); a float for two 1-D vectors. float64; cos = 0 when either vector is zero."""
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    cos = (u * v).sum(-1) / np.maximum(np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1), EPS)
    d = (1.0 - cos) * np.linalg.norm(u - v, axis=-1)
    return float(d) if np.ndim(d) == 0 else d


def uem_distance_from_cos(cos: float) -> float:
    """D(u, v) for unit vectors, where ||u - v|| = sqrt(2 - 2 cos); `cos` is clipped to [-1, 1]."""
    cos = min(1.0, max(-1.0, float(cos)))
    return (1.0 - cos) * math.sqrt(max(0.0, 2.0 - 2.0 * cos))


def pairwise_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] Euclidean distances between the rows of a [n, D] and b [m, D], float64 (the squared
    distance is clamped at 0 against rounding, so d(x, x) = 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(sq, 0.0))


def pairwise_uem_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[n, m] matrix of D(a_i, b_j), float64 (what `uem_distance` gives pair by pair)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    cos = (a @ b.T) / np.maximum(norms, EPS)
    return (1.0 - cos) * pairwise_euclidean(a, b)


# -- best-first selection --------------------------------------------------------------------------
def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices int64, values) of the n largest scores of each row, best first.

    argpartition, then a stable sort of those n only (not of the whole row). n is clipped to the row
    length; n <= 0 gives empty columns. A 1-D `scores` is one row and gives 1-D results. The order
    among equal scores is unspecified (as with any partition); NaN ranks last.
    """
    s = np.asarray(scores)
    one_row = s.ndim == 1
    rows = s[None, :] if one_row else s
    if rows.ndim != 2:
        raise ValueError(f"expected a 1-D or 2-D score array, got shape {s.shape}")
    n = max(0, min(int(n), rows.shape[1]))
    if n == 0:
        idx = np.zeros((len(rows), 0), np.int64)
    else:
        part = np.argpartition(-rows, n - 1, axis=1)[:, :n]
        order = np.argsort(-np.take_along_axis(rows, part, axis=1), axis=1, kind="stable")
        idx = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    values = np.take_along_axis(rows, idx, axis=1)
    return (idx[0], values[0]) if one_row else (idx, values)
