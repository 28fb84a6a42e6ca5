"""Alignment read-outs of one bundle's own int8 vectors, scored exactly as `uemctl eval` scores.

    python benchmarks/probes/alignment_grid.py BUNDLE DATA [--out results.json]

For every variant (no alignment, mean, whitening at several shrinkages, each with/without the
self-learned maps and CSLS), the alignment is fitted from the bundle's stored raw vectors
(`uem.export.align.fit_alignment`, as export fits it, no labels) and every ordered pair is scored
with `uem.engine.align.pair_score_matrix` (what `uem.eval.engine_scores.pair_scores` and so
`uemctl eval` use) and `uem.eval.metrics.retrieval_metrics`. The vectors are the bundle's: the same int8 encoder output
`uemctl eval` recomputes from DATA, so a variant's numbers are those of a bundle exported with it
(checked for the exported default: RESULTS-archive.md "Aligned retrieval"). Labels are read by the metrics only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from uem.export.alignscore import VARIANTS, bundle_vectors, score


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
