"""Alignment read-outs of one bundle's own int8 vectors, scored exactly as `uemctl eval` scores.

    python benchmarks/probes/alignment_grid.py BUNDLE DATA [--out results.json]

For every variant (no alignment, mean, whitening at several shrinkages, each with/without the
self-learned maps and CSLS), the alignment is fitted from the bundle's stored raw vectors
(`uem.export.align.fit_alignment`, as export fits it, no labels) and every ordered pair is scored
with `uem.engine.align.pair_score_matrix` (what `uem.eval.engine_scores.pair_scores` and so
`uemctl eval` use) and `uem.eval.metrics.retrieval_metrics`. The vectors are the bundle's: the same int8 encoder output
`uemctl eval` recomputes from DATA, so a variant's numbers are those of a bundle exported with it
(checked for the exported default: RESULTS.md "Aligned retrieval"). Labels are read by the metrics only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from uem.engine.align import pair_score_matrix
from uem.engine.bundle import read_bundle
from uem.eval.labels import load_labels
from uem.eval.metrics import retrieval_metrics
from uem.export.align import AlignConfig, fit_alignment

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


def source_inference(vecs) -> dict:
    """How often the bundle's domain classifier names a query's own domain: fitted on every
    other item of each domain and tested on the rest (held out), and fitted on all (in-sample,
    what an exported bundle does for its own items)."""
    from uem.engine.align import Alignment
    from uem.export.align import fit_source_classifier

    def accuracy(fit, test):
        names, w, b = fit_source_classifier(fit)
        al = Alignment(source_domains=names, source_weights=w, source_bias=b)
        right = sum(int(np.sum(np.array(al.infer_source(v), dtype=object) == d)) for d, v in test.items())
        return round(right / sum(len(v) for v in test.values()), 4)

    return {"held_out": accuracy({d: v[0::2] for d, v in vecs.items()}, {d: v[1::2] for d, v in vecs.items()}),
            "in_sample": accuracy(vecs, vecs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--fit-fractions", default="", help="also: the default variant fitted on these fractions "
                    "of each domain (e.g. 0.25,0.5,0.75) and applied to all: the drift of `index add`")
    ap.add_argument("--drift-variant", default="whiten5.0+csls", help="the variant --fit-fractions refits")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    vecs, labs = bundle_vectors(args.bundle, args.data)
    results = {"bundle": str(args.bundle), "data": str(args.data), "variants": {},
               "source_inference": source_inference(vecs)}
    print(f"source domain inferred right: {results['source_inference']}", flush=True)
    for name in args.variants.split(","):
        res = score(vecs, labs, VARIANTS[name])
        results["variants"][name] = res
        print(f"{name:22s} top-1 {res['mean_top1_identity']:.3f}  mAP {res['mean_map']:.3f}  (fit {res['fit_s']} s)  "
              + "  ".join(f"{p} {v['top1_identity']:.3f}/{v['map']:.3f}" for p, v in res["pairs"].items()), flush=True)
    results["drift"] = {}
    for f in [float(x) for x in args.fit_fractions.split(",") if x]:
        res = score(vecs, labs, VARIANTS[args.drift_variant], fit_fraction=f)
        res["variant"] = args.drift_variant
        results["drift"][str(f)] = res
        print(f"{args.drift_variant} fitted on {f:.0%} of each domain: top-1 {res['mean_top1_identity']:.3f}  mAP {res['mean_map']:.3f}",
              flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
