"""An alignment choice scored on a bundle's own vectors, as `uemctl eval` would score a bundle exported
with it (the benchmarks' and probes' shared measure; benchmarks/probes/alignment_grid.py).

The alignment is fitted from the given raw vectors (`fit_alignment`, as export fits it, no labels)
and every ordered pair is scored with `uem.engine.align.pair_score_matrix` (what
`uem.eval.engine_scores.pair_scores` and so `uemctl eval` use) and `uem.eval.metrics.retrieval_metrics`; labels are read by the metrics
only. `VARIANTS` names the read-outs benchmarks/RESULTS.md and RESULTS-archive.md compare.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from ..engine.align import pair_score_matrix
from ..engine.bundle import read_bundle
from ..eval.labels import load_labels
from ..eval.metrics import retrieval_metrics
from .align import AlignConfig, fit_alignment

VARIANTS = {
    "none": AlignConfig(kind="none", maps=False, csls_k=0, csls_candidates=1),
    "mean": AlignConfig(kind="mean", maps=False, csls_k=0, csls_candidates=1),
    "mean+csls": AlignConfig(kind="mean", maps=False),
    "mean+map+csls": AlignConfig(kind="mean", maps=True),
    "whiten0.1": AlignConfig(kind="whiten", shrinkage=0.1, maps=False, csls_k=0, csls_candidates=1),
    "whiten0.1+csls": AlignConfig(kind="whiten", shrinkage=0.1, maps=False),
    "whiten0.1+map": AlignConfig(kind="whiten", shrinkage=0.1, maps=True, csls_k=0, csls_candidates=1),
    "whiten0.1+map+csls": AlignConfig(kind="whiten", shrinkage=0.1, maps=True),
    "whiten0.3+map+csls": AlignConfig(kind="whiten", shrinkage=0.3, maps=True),
    "whiten1.0+map+csls": AlignConfig(kind="whiten", shrinkage=1.0, maps=True),
    "whiten0.03+map+csls": AlignConfig(kind="whiten", shrinkage=0.03, maps=True),
    "whiten1.0": AlignConfig(kind="whiten", shrinkage=1.0, maps=False, csls_k=0, csls_candidates=1),
    "whiten1.0+csls": AlignConfig(kind="whiten", shrinkage=1.0, maps=False),
    "whiten1.0+map": AlignConfig(kind="whiten", shrinkage=1.0, maps=True, csls_k=0, csls_candidates=1),
    "whiten2.0+map+csls": AlignConfig(kind="whiten", shrinkage=2.0, maps=True),
    "whiten5.0+map+csls": AlignConfig(kind="whiten", shrinkage=5.0, maps=True),
    "whiten5.0": AlignConfig(kind="whiten", shrinkage=5.0, maps=False, csls_k=0, csls_candidates=1),
    "whiten5.0+csls": AlignConfig(kind="whiten", shrinkage=5.0, maps=False),
    "whiten5.0+map": AlignConfig(kind="whiten", shrinkage=5.0, maps=True, csls_k=0, csls_candidates=1),
    "whiten10+map+csls": AlignConfig(kind="whiten", shrinkage=10.0, maps=True),
    "whiten5.0+map1+csls": AlignConfig(kind="whiten", shrinkage=5.0, maps=True, map_rounds=1),
    "whiten5.0+map2+csls": AlignConfig(kind="whiten", shrinkage=5.0, maps=True, map_rounds=2),
    "whiten2.0+csls": AlignConfig(kind="whiten", shrinkage=2.0, maps=False),
    "whiten10+csls": AlignConfig(kind="whiten", shrinkage=10.0, maps=False),
    "whiten20+csls": AlignConfig(kind="whiten", shrinkage=20.0, maps=False),
    "whiten50+csls": AlignConfig(kind="whiten", shrinkage=50.0, maps=False),
    "whiten1.0+map+csls5": AlignConfig(kind="whiten", shrinkage=1.0, maps=True, csls_k=5, csls_candidates=50),
    "whiten1.0+map+csls20": AlignConfig(kind="whiten", shrinkage=1.0, maps=True, csls_k=20, csls_candidates=50),
}


def bundle_vectors(bundle: Path, data: Path):
    """Per domain: the bundle's raw vectors in the order of DATA's labels (only items found in both)."""
    info = read_bundle(bundle)
    labels = load_labels(data)
    vecs, labs = {}, {}
    for d, dom in info.domains.items():
        if d not in labels:
            continue
        row = {str(Path(it["path"]).resolve()): i for i, it in enumerate(dom.items)}
        lab = labels[d]
        keep = np.array([str(Path(p).resolve()) in row for p in lab.paths])
        lab = lab.subset(keep)
        vecs[d] = np.asarray(info.load_vectors(d, mmap=False))[[row[str(Path(p).resolve())] for p in lab.paths]]
        labs[d] = lab
    return vecs, labs


def score(vecs, labs, cfg: AlignConfig, seed: int = 0, fit_fraction: float = 1.0) -> dict:
    """`fit_fraction` < 1: the alignment is fitted on a seeded fraction of each domain and applied
    to all of it — a bundle exported with that fraction and grown to the rest by `index add`
    (which keeps the transform and recomputes the CSLS statistics exactly, as here)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 11)
    fit_on = vecs if fit_fraction >= 1 else {
        d: v[np.sort(rng.choice(len(v), max(2, int(len(v) * fit_fraction)), replace=False))] for d, v in vecs.items()}
    alignment, _ = fit_alignment(fit_on, cfg, seed=seed)
    fit_s = time.perf_counter() - t0
    pairs = {}
    for q, r in itertools.permutations(sorted(vecs), 2):
        s = pair_score_matrix(alignment, vecs[q], q, r, vecs[r])
        m = retrieval_metrics(s, labs[q].categories, labs[r].categories, labs[q].identities,
                              labs[r].identities, (1,))
        pairs[f"{q}->{r}"] = {"top1_identity": round(float(m["top1_identity"]), 4), "map": round(float(m["map"]), 4)}
    return {"pairs": pairs, "fit_s": round(fit_s, 1),
            "mean_top1_identity": round(float(np.mean([p["top1_identity"] for p in pairs.values()])), 4),
            "mean_map": round(float(np.mean([p["map"] for p in pairs.values()])), 4)}
