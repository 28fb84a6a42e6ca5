#!/usr/bin/env python
"""Can a bundle choose its alignment without labels? Candidates against a label-free criterion.

    .venv/bin/python benchmarks/probes/alignment_choice.py BUNDLE DATA [--wild EVAL_DIR/wild]

For each candidate alignment (whitening at several shrinkages, centring alone, none), fitted on the
bundle's stored raw vectors as export fits it: the label-free criteria (over ordered domain pairs,
the share of source items with a mutual CSLS partner, and those pairs' mean cosine), and, with
labels, what a user gets: mean top-1 identity (or P@1 where domains share no identity) and mAP@All
over every pair, for the queries as indexed and (with --wild, the wild copies `uemctl eval
--queries wild` left in its report folder) for wild queries. Decided: whether export should choose
the alignment per bundle (README, "How retrieval is aligned across domains").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from uem.engine import Engine
from uem.engine.align import mutual_csls_pairs, pair_score_matrix
from uem.engine.bundle import read_bundle
from uem.eval.harness import evaluate_pair, parse_pairs
from uem.eval.labels import DomainLabels, load_labels
from uem.export.align import AlignConfig, fit_alignment

CANDIDATES = [("whiten", 1.0), ("whiten", 5.0), ("whiten", 20.0), ("whiten", 100.0), ("mean", 5.0), ("none", 5.0)]


def criteria(alignment, vectors: dict[str, np.ndarray]) -> tuple[float, float]:
    """(mean share of source items with a mutual CSLS partner, their mean cosine) over pairs."""
    aligned = {d: alignment.align(v, d) for d, v in vectors.items()}
    shares, cosines = [], []
    for s, t in parse_pairs(None, list(vectors)):
        i, j = mutual_csls_pairs(aligned[s], aligned[t], min(10, len(aligned[t]), len(aligned[s])))
        shares.append(len(i) / len(aligned[s]))
        cosines.append(float(np.mean(np.sum(aligned[s][i] * aligned[t][j], axis=1))) if len(i) else 0.0)
    return float(np.mean(shares)), float(np.mean(cosines))


def scores(alignment, q_vectors, vectors, labels, q_labels) -> tuple[float, float]:
    hits, maps = [], []
    for s, t in parse_pairs(None, list(vectors)):
        def score_fn(qv, qd, td, tv):
            return pair_score_matrix(alignment, qv, qd, td, tv)
        r = evaluate_pair(q_vectors[s], q_labels[s], vectors[t], labels[t], score_fn=score_fn, n_examples=0)
        hits.append(r["top1_identity"] if r["top1_identity"] is not None else r["p_at_k"]["1"])
        maps.append(r["map"])
    return float(np.mean(hits)), float(np.mean(maps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--wild", type=Path, help="the wild/v1-seed0 folder of a `uemctl eval --queries wild -o DIR` report")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    info = read_bundle(args.bundle)
    labels = load_labels(args.data)
    rows_of = {d: {str(Path(it["path"]).resolve()): i for i, it in enumerate(info.domains[d].items)}
               for d in info.domains}
    vectors = {}
    for d in info.domains:   # the stored raw vectors in the labels' order
        stored = info.load_vectors(d, mmap=False)
        vectors[d] = stored[[rows_of[d][str(Path(p).resolve())] for p in labels[d].paths]]
    views = {"clean": (vectors, labels)}
    if args.wild:
        with Engine.open(args.bundle) as eng:
            for variant in ("reframed", "background"):
                folder = args.wild / variant
                wl, wv = {}, {}
                for d, lab in labels.items():
                    paths = [folder / d / (Path(p).relative_to(args.data.resolve() / d).as_posix() + ".jpg")
                             for p in [Path(x).resolve() for x in lab.paths]]
                    wl[d] = DomainLabels(d, paths, lab.categories, lab.identities)
                    wv[d] = eng.embed(paths)
                views[variant] = (wv, wl)
    report = []
    print(f"{'alignment':<16} {'mutual share':>12} {'mutual cos':>10} " +
          " ".join(f"{v + ' hit':>15} {v + ' mAP':>15}" for v in views))
    for kind, shrinkage in CANDIDATES:
        alignment, _ = fit_alignment(vectors, AlignConfig(kind=kind, shrinkage=shrinkage))
        share, cos = criteria(alignment, vectors)
        row = {"kind": kind, "shrinkage": shrinkage, "mutual_share": share, "mutual_cos": cos}
        for v, (qv, ql) in views.items():
            row[v] = scores(alignment, qv, vectors, labels, ql)
        report.append(row)
        name = f"{kind} {shrinkage:g}" if kind == "whiten" else kind
        print(f"{name:<16} {share:12.3f} {cos:10.3f} " +
              " ".join(f"{row[v][0]:15.3f} {row[v][1]:15.3f}" for v in views), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
