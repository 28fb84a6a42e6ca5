"""Fitting a bundle's alignment at export (and `uemctl index realign`): label-free, numpy only.

From each domain's own raw vectors: its mean and shrunk ZCA whitening; then, optionally, one
self-learned orthogonal map per domain pair; and CSLS ranking parameters. The math lives in
`uem.engine.align` (the engine applies it); this module holds the defaults and their reasons.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..engine.align import KINDS, Alignment, CslsParams, fit_domains, fit_maps


@dataclass
class AlignConfig:
    """How export aligns the domains (defaults measured on emoji3 and phosphor4,
    benchmarks/RESULTS.md "Aligned retrieval").

    kind "whiten" lifted top-1 identity the most of the per-domain read-outs on both sets, and
    shrinkage 5 (x the mean eigenvalue: a mild whitening that mostly damps the dominant
    directions) was best or within 0.01 of best on both sets and on the trained model, and
    amplifies int8 noise far less than 0.1. CSLS (k 10, over the top 50 hits) added 0.02-0.04
    top-1 everywhere. The self-learned pair maps are off by default: they lift category mAP
    (emoji3 +0.07), but their identity gain is fitted to the indexed items themselves; for new
    pictures they cost top-1 on both sets (emoji3 0.394 -> 0.307, phosphor4 0.911 -> 0.897;
    benchmarks/probes/alignment_heldout.py). `--maps` turns them on."""

    kind: str = "whiten"
    shrinkage: float = 5.0
    maps: bool = False
    map_rounds: int = 8
    csls_k: int = 10
    csls_candidates: int = 50

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"alignment must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not 0 < self.shrinkage <= 1e4:  # also refuses NaN and infinity
            raise ValueError(f"shrinkage must be in (0, 10000], got {self.shrinkage}")
        if self.map_rounds < 1:
            raise ValueError(f"map rounds must be at least 1, got {self.map_rounds}")
        CslsParams(self.csls_k, self.csls_candidates)  # validates k and candidates

    def to_dict(self) -> dict:
        return asdict(self)


NO_ALIGNMENT = AlignConfig(kind="none", maps=False, csls_k=0, csls_candidates=1)


def fit_alignment(vectors: dict[str, np.ndarray], cfg: AlignConfig, seed: int = 0,
                  probes: dict[str, np.ndarray] | None = None,
                  probe_rows: dict[str, np.ndarray] | None = None) -> tuple[Alignment, dict]:
    """The bundle's Alignment from raw unit vectors per domain; also a log of the map learning
    (mutual pairs found per round, per pair) for the manifest. `probes` (export/probes.py), when
    given, are stored in it and also teach the domain classifier what a wild picture of each
    domain looks like (the whitening and maps are fitted on the items alone)."""
    base = fit_domains(vectors, cfg.kind, cfg.shrinkage)
    csls = CslsParams(cfg.csls_k, cfg.csls_candidates)
    maps, log = {}, {}
    if cfg.maps and len(vectors) > 1:
        aligned = {d: base.align(v, d) for d, v in vectors.items()}
        maps, log = fit_maps(aligned, rounds=cfg.map_rounds, k=max(cfg.csls_k, 10), seed=seed)
    probes = probes or {}
    both = {d: np.concatenate([v, probes[d]]) if d in probes else v for d, v in vectors.items()}
    names, weights, bias = fit_source_classifier(both, seed=seed)
    return Alignment(kind=base.kind, means=base.means, whiteners=base.whiteners, maps=maps, csls=csls,
                     shrinkage=base.shrinkage, source_domains=names, source_weights=weights,
                     source_bias=bias, probes=dict(probes), probe_rows=dict(probe_rows or {})), \
        {"map_pairs_per_round": log, "config": cfg.to_dict()}


def fit_source_classifier(vectors: dict[str, np.ndarray], seed: int = 0, max_per_domain: int = 20000):
    """A linear classifier of which domain a raw vector comes from (scikit-learn's multinomial
    logistic regression; the domain is the folder an image was indexed from, never a category).
    Why not the whitening Gaussians: with the shrinkage that retrieval wants they confuse similar
    styles (phosphor4's thin vs duotone), while a linear boundary separates them. Returns
    (domains, weights (n, D), bias (n,)) as float32; (names, None, None) for a single domain."""
    from sklearn.linear_model import LogisticRegression

    names = sorted(vectors)
    if len(names) < 2:
        return names, None, None
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i, d in enumerate(names):
        v = np.asarray(vectors[d], np.float32)
        if len(v) > max_per_domain:
            v = v[np.sort(rng.choice(len(v), max_per_domain, replace=False))]
        xs.append(v)
        ys.append(np.full(len(v), i))
    clf = LogisticRegression(C=10.0, max_iter=2000).fit(np.concatenate(xs), np.concatenate(ys))
    w, b = clf.coef_, clf.intercept_
    if len(names) == 2:  # scikit-learn keeps one row for two classes: logit of class 1 vs 0
        w, b = np.stack([-w[0] / 2, w[0] / 2]), np.array([-b[0] / 2, b[0] / 2])
    return names, w.astype(np.float32), b.astype(np.float32)
