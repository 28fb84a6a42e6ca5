"""Synthetic unit vectors for index benchmarks, and exact k-NN ground truth by numpy brute force.

Uniformly random points on the sphere are the worst case for HNSW: no structure, full intrinsic
dimension. Real embeddings are nothing like that: on the emoji3 bundle the participation ratio of the
vectors' covariance is 8-14 (of 128 dims), items sit at cos ~0.88 to their own prototype and two
random items at cos ~0.16. `clustered` draws vectors with that shape (see its docstring) so index
numbers describe embedding-like data; `uniform` is kept as the stated worst case.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..engine.geometry import top_n, unit_rows


@dataclass(frozen=True)
class ClusterSpec:
    """A Gaussian mixture on the sphere, shaped like real embeddings.

    Every cluster centre is normalise(shared * e0 + u): u is a unit vector in a random
    `centre_dim`-dim subspace whose i-th axis has variance (1 + i)^-decay, so centres share a common
    direction and the data has a decaying spectrum (low intrinsic dimension). A point is
    normalise(centre + spread * B_k z / sqrt(r) + noise * g / sqrt(dim)), B_k a random orthonormal
    basis of an r = `spread_dim`-dim subspace per cluster, z and g standard normal.
    `points_per_cluster` sets the number of clusters (n / points_per_cluster), the emoji3 bundle's
    (~26 items per prototype). The defaults were fitted to the emoji3 bundle's twemoji/openmoji
    vectors at their size (1914): participation ratio 16.5 vs 14, nn-1 cos 0.90 vs 0.92, nn-10 cos
    0.85 vs 0.83, random pair cos 0.15 vs 0.16 (`shape_stats`); `fit_spec` fits one to any
    bundle's vectors.
    """

    points_per_cluster: int = 26
    centre_dim: int = 32
    spread_dim: int = 16
    shared: float = 0.44
    spread: float = 0.4
    noise: float = 0.2
    decay: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def uniform(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """n float32 unit vectors uniformly distributed on the sphere (the HNSW worst case)."""
    rng = np.random.default_rng(seed)
    return unit_rows(rng.standard_normal((n, dim), dtype=np.float32))


def clustered(n: int, dim: int, seed: int = 0, spec: ClusterSpec = ClusterSpec(),
              chunk: int = 8192) -> np.ndarray:
    """n float32 unit vectors from the embedding-like mixture `spec` (rows in random order)."""
    rng = np.random.default_rng(seed)
    k = max(1, n // spec.points_per_cluster)
    cdim, r = min(spec.centre_dim, dim - 1), min(spec.spread_dim, dim)
    basis = np.linalg.qr(rng.standard_normal((dim, cdim + 1)))[0].astype(np.float32)
    e0, sub = basis[:, 0], basis[:, 1:]
    scale = (1.0 + np.arange(cdim, dtype=np.float32)) ** np.float32(-spec.decay / 2)
    u = unit_rows(rng.standard_normal((k, cdim), dtype=np.float32) * scale) @ sub.T
    centres = unit_rows(spec.shared * e0[None, :] + u)
    # One r-dim orthonormal basis per cluster (QR of a (dim, r) Gaussian block).
    bases = np.linalg.qr(rng.standard_normal((k, dim, r), dtype=np.float32))[0].astype(np.float32)
    owner = rng.integers(0, k, size=n)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        c = owner[s:s + chunk]
        z = rng.standard_normal((len(c), r), dtype=np.float32) * np.float32(spec.spread / np.sqrt(r))
        g = rng.standard_normal((len(c), dim), dtype=np.float32) * np.float32(spec.noise / np.sqrt(dim))
        out[s:s + chunk] = centres[c] + np.einsum("ndr,nr->nd", bases[c], z) + g
    return unit_rows(out)


def exact_topk(data: np.ndarray, queries: np.ndarray, k: int, block: int = 65536) -> np.ndarray:
    """Exact top-k labels (by inner product, best first) of every query: batched matmul + top-k
    over blocks of `data`, merged, so memory stays at queries x block."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for s in range(0, len(data), block):
        part, sims = top_n(q @ data[s:s + block].T, k)
        keep, best_s = top_n(np.concatenate([best_s, sims], axis=1), k)
        best_i = np.take_along_axis(np.concatenate([best_i, part + s], axis=1), keep, 1)
    return best_i


def brute_force_query(data: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """What an index-free engine does per query: one matmul over everything + top-k selection."""
    return top_n(data @ query, k)[0]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found (k = truth.shape[1])."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(f[:k], t, assume_unique=True)) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)


def shape_stats(x: np.ndarray, sample: int = 2000, seed: int = 0) -> dict:
    """What `fit_spec` matches between synthetic and real embeddings: participation ratio of the
    covariance (effective dimension), mean cosine to the 1st and 10th nearest neighbour, mean
    cosine of a random pair."""
    rng = np.random.default_rng(seed)
    s = np.asarray(x)[rng.choice(len(x), size=min(sample, len(x)), replace=False)].astype(np.float64)
    c = s - s.mean(0)
    ev = np.linalg.eigvalsh(c.T @ c / len(c))
    sims = s @ s.T
    np.fill_diagonal(sims, -2.0)
    nn = -np.sort(-sims, axis=1)
    return {"participation_ratio": float(ev.sum() ** 2 / (ev ** 2).sum()),
            "nn1_cos": float(nn[:, 0].mean()), "nn10_cos": float(nn[:, 9].mean()),
            "random_pair_cos": float(sims[sims > -2].mean())}


def _mismatch(a: dict, b: dict) -> float:
    """Relative error of the participation ratio plus cosine errors in units of 0.05."""
    pr = (a["participation_ratio"] - b["participation_ratio"]) / b["participation_ratio"]
    return pr ** 2 + sum(((a[k] - b[k]) / 0.05) ** 2 for k in ("nn1_cos", "nn10_cos", "random_pair_cos"))


def fit_spec(real: np.ndarray, seed: int = 0) -> tuple[ClusterSpec, dict, dict]:
    """The ClusterSpec (over a small grid of shared / spread / noise / centre_dim) whose vectors at
    the real set's size and width look most like `real` by `shape_stats`: (spec, real stats,
    synthetic stats). How index benchmarks get data shaped like a given bundle's embeddings at
    sizes the bundle does not have."""
    real = np.asarray(real, np.float32)
    n, dim = real.shape
    want = shape_stats(real, sample=n, seed=seed)
    best: tuple[float, ClusterSpec, dict] | None = None
    for centre_dim in (32, 64):
        for shared in (0.3, 0.45, 0.6, 0.75):
            for spread in (0.4, 0.5, 0.6, 0.7):
                for noise in (0.2, 0.3, 0.4, 0.5):
                    spec = ClusterSpec(centre_dim=centre_dim, shared=shared, spread=spread, noise=noise)
                    got = shape_stats(clustered(n, dim, seed=seed, spec=spec), sample=n, seed=seed)
                    err = _mismatch(got, want)
                    if best is None or err < best[0]:
                        best = (err, spec, got)
    assert best is not None
    return best[1], want, best[2]
