"""Per-domain alignment of the embedding and hubness-corrected (CSLS) ranking — numpy only.

Why: an encoder's output keeps each visual domain in its own region and shape of the space (a
photo's and a sketch's vectors of one concept differ by a domain offset and a domain-specific
stretch). Measured on emoji3 with the untrained network, undoing that per domain, from each
domain's own unlabeled vectors, lifts cross-domain identity retrieval more than training does
(benchmarks/RESULTS.md, "Aligned retrieval"). Three label-free steps, each optional:

1. Per-domain alignment `align(x, d)`: subtract the domain's mean, and (kind "whiten") apply its
   shrunk ZCA whitening W_d = (C_d + a_d I)^(-1/2), a_d = shrinkage x mean eigenvalue of C_d; then
   unit length. ZCA (not PCA whitening) keeps every domain in the same coordinates, so cosine
   across domains stays meaningful without any map.
2. A self-learned orthogonal map per domain pair (`maps`): R_ab maps a's aligned space onto b's.
   Learned at export by orthogonal Procrustes on mutual nearest neighbours under CSLS, iterated
   (unsupervised bilingual-embedding mapping, Artetxe et al. 2018); R_ba = R_ab^T.
3. CSLS ranking (Conneau et al. 2018; computed in csls.py for the engine and for eval alike): for
   a query q from source s, target item t scores 2 cos(q, t) - r_q - r_t, where r_q = mean cosine
   of q to its k nearest target items and r_t = mean cosine of t to its k nearest source items
   (stored per item and source domain). It demotes "hub" items that are near everything.

The query path: raw unit vector x of source s -> q_s = align(x, s) (own-domain searches) ->
q = to_target(q_s, s, t) (target searches, CSLS). Indexes hold align(y, t) of their items; the
bundle's vectors.npy keeps the raw encoder output, so a bundle can be re-aligned without
re-embedding. The source domain, when not given, is inferred by a linear domain classifier over
the raw vector (multinomial logistic regression fitted at export on which domain folder each image
came from, never on categories); bundles without one fall back to the domains' Gaussians.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .csls import candidate_csls, exact_mean_top_k, mutual_csls_pairs
from .geometry import unit_rows

KINDS = ("none", "mean", "whiten")
ALIGNMENT_NPZ = "alignment.npz"


def pair_map_key(a: str, b: str) -> tuple[str, str, bool]:
    """(first, second, transposed): maps are stored once per unordered pair, first < second."""
    return (a, b, False) if a < b else (b, a, True)


@dataclass(frozen=True)
class CslsParams:
    k: int = 10            # neighbours averaged for r (both sides)
    candidates: int = 50   # HNSW candidates re-ranked per query (the engine's top-M)

    def __post_init__(self) -> None:
        if self.k < 0 or self.candidates < 1 or (self.k and self.candidates < self.k):
            raise ValueError(f"CSLS needs k >= 0 and candidates >= max(k, 1), got {self.k}, {self.candidates}")

    @property
    def enabled(self) -> bool:
        return self.k > 0


@dataclass
class Alignment:
    """The transforms of one bundle (immutable once built; see the module docstring)."""

    kind: str = "none"
    means: dict[str, np.ndarray] = field(default_factory=dict)          # (D,) per domain
    whiteners: dict[str, np.ndarray] = field(default_factory=dict)      # (D, D) per domain (kind "whiten")
    maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (a, b), a < b: (D, D)
    csls: CslsParams = field(default_factory=lambda: CslsParams(k=0))
    shrinkage: float = 0.0
    source_domains: list[str] = field(default_factory=list)     # rows of the domain classifier
    source_weights: np.ndarray | None = None                     # (len(source_domains), D)
    source_bias: np.ndarray | None = None                        # (len(source_domains),)
    # Raw embeddings of wild copies of some items (export/probes.py) and the row each copies: the
    # "no match" calibration learns a user's picture from them, and realign refits it without images.
    probes: dict[str, np.ndarray] = field(default_factory=dict)         # (n, D) per domain
    probe_rows: dict[str, np.ndarray] = field(default_factory=dict)     # (n,) item rows
    _log_norm: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)  # derived: log|W|

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"alignment kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind != "none" and not self.means:
            raise ValueError(f"alignment {self.kind!r} needs per-domain means")
        if self.kind == "whiten" and set(self.whiteners) != set(self.means):
            raise ValueError("whitening needs a transform for every domain with a mean")
        for (a, b) in self.maps:
            if not a < b:
                raise ValueError(f"map key ({a}, {b}) must be ordered")
        if self.source_weights is not None:
            w, b = np.asarray(self.source_weights), np.asarray(self.source_bias)
            if w.shape[0] != len(self.source_domains) or b.shape != (len(self.source_domains),):
                raise ValueError("the domain classifier's shape does not match its domains")
        if set(self.probes) != set(self.probe_rows) or any(
                len(self.probes[d]) != len(self.probe_rows[d]) for d in self.probes):
            raise ValueError("every domain's probes need their item rows")
        for name, w in self.whiteners.items():
            sign, logdet = np.linalg.slogdet(np.asarray(w, np.float64))
            if sign <= 0 or not math.isfinite(logdet):
                raise ValueError(f"whitening transform of {name} is not positive definite")
            self._log_norm[name] = float(logdet)

    # -- facts -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.kind != "none" or bool(self.maps) or self.csls.enabled

    @property
    def domains(self) -> list[str]:
        """The domains a source can be inferred among."""
        return list(self.source_domains) if self.source_weights is not None else list(self.means)

    def describe(self) -> dict:
        """What the manifest records and `uemctl info` shows."""
        out = {"kind": self.kind, "shrinkage": self.shrinkage,
               "maps": sorted(f"{a}<->{b}" for a, b in self.maps),
               "csls": {"k": self.csls.k, "candidates": self.csls.candidates},
               "source_classifier": list(self.source_domains) if self.source_weights is not None else None}
        if self.probes:  # only then: a bundle without probes keeps the record older readers know
            out["probes"] = {d: int(len(v)) for d, v in sorted(self.probes.items())}
        return out

    # -- transforms ------------------------------------------------------------------------
    def align(self, vecs: np.ndarray, domain: str | None) -> np.ndarray:
        """Raw unit rows of `domain` -> aligned unit rows in that domain's space. A domain without
        a transform (or kind "none") passes through unchanged."""
        x = np.asarray(vecs, np.float32)
        if self.kind == "none" or domain not in self.means:
            return unit_rows(x)
        x = x - self.means[domain].astype(np.float32, copy=False)
        if self.kind == "whiten":
            x = x @ self.whiteners[domain].astype(np.float32, copy=False)  # symmetric: x W == (W x^T)^T
        return unit_rows(x)

    def to_target(self, aligned: np.ndarray, source: str | None, target: str) -> np.ndarray:
        """Aligned rows of `source` -> the target's aligned space (identity without a map)."""
        if source is None or source == target:
            return aligned
        a, b, transposed = pair_map_key(source, target)
        r = self.maps.get((a, b))
        if r is None:
            return aligned
        r = r.astype(np.float32, copy=False)
        # stored R maps a -> b as row vectors: y = x @ R; the way back is R^T
        return unit_rows(aligned @ (r.T if transposed else r))

    def infer_source(self, raw: np.ndarray) -> list[str | None]:
        """Per raw unit row, its most likely domain: the domain classifier's argmax where the
        bundle has one; else the domain under whose Gaussian (mean, shrunk covariance) it is most
        likely, log N(x) = log|W| - ||W (x - mean)||^2 / 2 + const, or (kind "mean") the nearest
        mean. None for every row when the alignment knows no domain."""
        x = np.asarray(raw, np.float64)
        names = self.domains
        if not names:
            return [None] * len(x)
        if self.source_weights is not None:
            logits = x @ np.asarray(self.source_weights, np.float64).T + np.asarray(self.source_bias, np.float64)
            return [names[i] for i in np.argmax(logits, axis=1)]
        scores = np.empty((len(x), len(names)))
        for j, d in enumerate(names):
            z = x - self.means[d]
            if self.kind == "whiten":
                z = z @ self.whiteners[d]
                scores[:, j] = self._log_norm[d] - 0.5 * np.einsum("ij,ij->i", z, z)
            else:
                scores[:, j] = -np.einsum("ij,ij->i", z, z)
        return [names[i] for i in np.argmax(scores, axis=1)]

    # -- storage ---------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named float32 arrays (written as one .npz, read without pickle)."""
        out = {f"mean/{d}": np.asarray(v, np.float32) for d, v in self.means.items()}
        out.update({f"whiten/{d}": np.asarray(w, np.float32) for d, w in self.whiteners.items()})
        out.update({f"map/{a}/{b}": np.asarray(r, np.float32) for (a, b), r in self.maps.items()})
        if self.source_weights is not None:
            out["source/weights"] = np.asarray(self.source_weights, np.float32)
            out["source/bias"] = np.asarray(self.source_bias, np.float32)
        out.update({f"probe/{d}": np.asarray(v, np.float32) for d, v in self.probes.items()})
        out.update({f"probe_rows/{d}": np.asarray(r, np.int64) for d, r in self.probe_rows.items()})
        return out

    @classmethod
    def from_arrays(cls, record: dict, arrays: dict[str, np.ndarray], dim: int) -> "Alignment":
        """The inverse of (describe(), arrays()); ValueError on anything inconsistent."""
        kind = str(record.get("kind", "none"))
        c = record.get("csls") or {}
        csls = CslsParams(k=int(c.get("k", 0)), candidates=int(c.get("candidates", 1)))
        means, whiteners, maps, probes, probe_rows = {}, {}, {}, {}, {}
        names = [str(x) for x in record.get("source_classifier") or []]
        weights = arrays.pop("source/weights", None) if names else None
        bias = arrays.pop("source/bias", None) if names else None
        if names and (weights is None or bias is None or np.asarray(weights).shape != (len(names), dim)
                      or np.asarray(bias).shape != (len(names),)):
            raise ValueError("the domain classifier is missing or has the wrong shape")
        for arr in (weights, bias):
            if arr is not None and (arr.dtype != np.float32 or not np.all(np.isfinite(arr))):
                raise ValueError("the domain classifier must be finite float32")
        for name, arr in arrays.items():
            parts = name.split("/")
            arr = np.asarray(arr)
            if parts[0] == "probe_rows" and len(parts) == 2 and arr.dtype == np.int64 and arr.ndim == 1 \
                    and np.all(arr >= 0):
                probe_rows[parts[1]] = arr
                continue
            if arr.dtype != np.float32 or not np.all(np.isfinite(arr)):
                raise ValueError(f"alignment array {name} must be finite float32")
            if parts[0] == "mean" and len(parts) == 2 and arr.shape == (dim,):
                means[parts[1]] = arr
            elif parts[0] == "whiten" and len(parts) == 2 and arr.shape == (dim, dim):
                whiteners[parts[1]] = arr
            elif parts[0] == "map" and len(parts) == 3 and arr.shape == (dim, dim):
                maps[(parts[1], parts[2])] = arr
            elif parts[0] == "probe" and len(parts) == 2 and arr.ndim == 2 and arr.shape[1] == dim:
                probes[parts[1]] = arr
            else:
                raise ValueError(f"unexpected alignment array {name} of shape {arr.shape}")
        expected = sorted(f"{a}<->{b}" for a, b in maps)
        if sorted(record.get("maps") or []) != expected:
            raise ValueError("the manifest's list of maps does not match the alignment file")
        recorded = record.get("probes") or {}
        if not isinstance(recorded, dict) or sorted(recorded) != sorted(probes) \
                or any(recorded[d] != len(probes[d]) for d in probes):
            raise ValueError("the manifest's probes do not match the alignment file")
        return cls(kind=kind, means=means, whiteners=whiteners, maps=maps, csls=csls,
                   shrinkage=float(record.get("shrinkage", 0.0)), source_domains=names,
                   source_weights=weights, source_bias=bias, probes=probes, probe_rows=probe_rows)


IDENTITY = Alignment()


# -- fitting (export and re-alignment; numpy only, no labels) -------------------------------

def fit_whitener(x: np.ndarray, shrinkage: float) -> np.ndarray:
    """Shrunk ZCA whitening of rows x: (C + a I)^(-1/2), a = shrinkage x mean eigenvalue of C,
    times max(1, 2 D / N) for a domain of fewer than 2 D items: whitening N points in D >= N - 1
    dimensions turns them into a regular simplex (all equally far apart), so a small domain gets
    proportionally more shrinkage and keeps its neighbourhoods.

    Computed from the SVD of the centred data (never an eigendecomposition of C, which fails to
    converge on some LAPACK builds for rank-deficient C); directions the data does not span get
    eigenvalue 0, so their scale is a^(-1/2), the same in every domain."""
    x = np.asarray(x, np.float64)
    n, dim = x.shape
    c = x - x.mean(0)
    try:
        _, s, vt = np.linalg.svd(c, full_matrices=False)
    except np.linalg.LinAlgError:
        import scipy.linalg  # export-side only

        _, s, vt = scipy.linalg.svd(c, full_matrices=False, lapack_driver="gesvd")
    ev = s ** 2 / max(n - 1, 1)
    small = max(1.0, 2.0 * dim / max(n, 1))
    a = max(float(shrinkage) * small * float(ev.sum()) / dim, 1e-12)  # mean eigenvalue over all D directions
    # W = a^-1/2 (I - V^T V) + V^T diag((ev + a)^-1/2) V: the unspanned directions get a^-1/2
    return np.eye(dim) / math.sqrt(a) + (vt.T * (1.0 / np.sqrt(ev + a) - 1.0 / math.sqrt(a))) @ vt


def fit_domains(vectors: dict[str, np.ndarray], kind: str, shrinkage: float = 0.1) -> Alignment:
    """Per-domain means (and whiteners) from each domain's own raw unit vectors."""
    if kind not in KINDS:
        raise ValueError(f"alignment kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "none":
        return Alignment()
    if not any(len(v) >= 2 for v in vectors.values()):
        return Alignment()
    # a domain of one distinct vector has no spread to align: centring would map it to zero
    usable = {d: np.asarray(v, np.float64) for d, v in vectors.items()
              if len(v) >= 2 and np.ptp(np.asarray(v), axis=0).max() > 1e-6}
    means = {d: v.mean(0).astype(np.float32) for d, v in usable.items()}
    whiteners = {}
    if kind == "whiten":
        whiteners = {d: fit_whitener(v, shrinkage).astype(np.float32) for d, v in usable.items()}
    return Alignment(kind=kind, means=means, whiteners=whiteners, shrinkage=float(shrinkage) if kind == "whiten" else 0.0)


def procrustes(xa: np.ndarray, xb: np.ndarray) -> np.ndarray:
    """The orthogonal R minimising ||xa R - xb||_F (rows paired)."""
    u, _, vt = np.linalg.svd(np.asarray(xa, np.float64).T @ np.asarray(xb, np.float64))
    return u @ vt


def learn_map(xa: np.ndarray, xb: np.ndarray, rounds: int = 8, k: int = 10, max_rows: int = 5000,
              seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Self-learned orthogonal map from a's aligned space onto b's: start at the identity, then
    `rounds` times: mutual nearest neighbours under CSLS -> Procrustes. At most `max_rows` of each
    side (a seeded sample) take part. Returns (R, pairs found per round)."""
    rng = np.random.default_rng(seed)
    xa = unit_rows(xa[np.sort(rng.choice(len(xa), max_rows, replace=False))] if len(xa) > max_rows else xa)
    xb = unit_rows(xb[np.sort(rng.choice(len(xb), max_rows, replace=False))] if len(xb) > max_rows else xb)
    dim = xa.shape[1]
    r = np.eye(dim)
    found = []
    for _ in range(int(rounds)):
        i, j = mutual_csls_pairs(unit_rows(xa @ r.astype(np.float32)), xb, k)
        found.append(int(len(i)))
        if len(i) < 2:
            break
        r = procrustes(xa[i], xb[j])
    return r, found


def fit_maps(aligned: dict[str, np.ndarray], rounds: int = 8, k: int = 10, seed: int = 0) -> tuple[dict, dict]:
    """One map per unordered domain pair; returns (maps, {"a<->b": pairs found per round})."""
    names = sorted(aligned)
    maps, log = {}, {}
    for x, a in enumerate(names):
        for b in names[x + 1:]:
            r, found = learn_map(aligned[a], aligned[b], rounds=rounds, k=k, seed=seed)
            maps[(a, b)] = r.astype(np.float32)
            log[f"{a}<->{b}"] = found
    return maps, log


def pair_score_matrix(alignment: Alignment, query_raw: np.ndarray, query_domain: str,
                      target_domain: str, target_raw: np.ndarray, csls: bool = True) -> np.ndarray:
    """Every query's ranking score against every target item (N_q, N_t), as the engine ranks:
    aligned (and mapped) cosine; with CSLS, each query's `candidates` best items by cosine get
    their CSLS score and rank first (the engine re-ranks exactly those), the rest follow by cosine
    (cos - 10: below any CSLS score). CSLS statistics are taken from the two given sets, as an
    index holding exactly these items stores them. Same as `Engine.query` up to HNSW recall."""
    own_q = alignment.align(query_raw, query_domain)
    q = alignment.to_target(own_q, query_domain, target_domain)
    t = alignment.align(target_raw, target_domain)
    cos = q @ t.T
    if not csls or not alignment.csls.enabled or query_domain == target_domain or not len(t) or not len(q):
        return cos
    k, m = alignment.csls.k, min(alignment.csls.candidates, cos.shape[1])
    r_items = exact_mean_top_k(alignment.to_target(t, target_domain, query_domain), own_q, k)
    top = np.argpartition(-cos, m - 1, axis=1)[:, :m]
    rows = np.arange(len(cos))[:, None]
    out = cos.astype(np.float64) - 10.0
    out[rows, top] = candidate_csls(np.take_along_axis(cos, top, axis=1), r_items[top], k)
    return out.astype(np.float32)


def csls_item_stats(aligned: dict[str, np.ndarray], alignment: Alignment,
                    order: list[str]) -> dict[str, np.ndarray]:
    """r_t per item of every domain t and every other domain s as source: float32 (N_t, len(order)),
    column j = the mean cosine of the item, in t's space, to its k nearest items of order[j]
    mapped into t's space (0 in t's own column). `aligned`: each domain's aligned unit rows.
    Exact (brute force, chunked)."""
    k = alignment.csls.k
    out = {}
    for t in order:
        stats = np.zeros((len(aligned[t]), len(order)), np.float32)
        for j, s in enumerate(order):
            if s != t:
                # cos(R_st a_s(x), a_t(y)) == cos(a_s(x), R_ts a_t(y)): t's items mapped into s's space
                stats[:, j] = exact_mean_top_k(alignment.to_target(aligned[t], t, s), aligned[s], k)
        out[t] = stats
    return out
