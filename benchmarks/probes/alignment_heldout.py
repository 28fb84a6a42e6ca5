"""Do the alignment's gains carry over to queries that were not in the bundle?

    python benchmarks/probes/alignment_heldout.py BUNDLE DATA [--variants ...] [--out F]

The benchmark protocols are transductive: the queries are the source domain's own indexed items,
the very vectors the alignment (and above all the self-learned maps) was fitted on. A user's query
is usually a new picture. Here each domain's items are split 50/50 (seeded): the bundle is the
first half of every domain (alignment fitted on it, indexes and CSLS statistics over it), and each
ordered pair is scored twice with the same fitted alignment: queries from the indexed half
("in bundle") and queries from the other half ("new pictures"), against the target's indexed half,
ranked exactly as the engine ranks (CSLS statistics of the target items against the indexed source
half, r(q) from the query's own candidates). Labels are read by the metrics only.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from uem.engine.csls import csls_scores, exact_mean_top_k, mean_top_k
from uem.eval.metrics import retrieval_metrics
from uem.export.align import fit_alignment
from uem.export.alignscore import VARIANTS, bundle_vectors


def scores(al, q_raw, qd, td, indexed_src_raw, target_raw):
    own_q = al.align(q_raw, qd)
    q = al.to_target(own_q, qd, td)
    t = al.align(target_raw, td)
    cos = q @ t.T
    if not al.csls.enabled:
        return cos
    r_t = exact_mean_top_k(al.to_target(t, td, qd), al.align(indexed_src_raw, qd), al.csls.k)
    return csls_scores(cos, mean_top_k(cos, al.csls.k), r_t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--variants", default="mean+csls,mean+map+csls,whiten5.0+csls,whiten5.0+map+csls")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    vecs, labs = bundle_vectors(args.bundle, args.data)
    rng = np.random.default_rng(args.seed)
    fit_rows, new_rows = {}, {}
    for d, v in vecs.items():
        perm = rng.permutation(len(v))
        fit_rows[d], new_rows[d] = np.sort(perm[: len(v) // 2]), np.sort(perm[len(v) // 2:])
    out = {"bundle": str(args.bundle), "data": str(args.data), "variants": {}}
    for name in args.variants.split(","):
        al, _ = fit_alignment({d: v[fit_rows[d]] for d, v in vecs.items()}, VARIANTS[name], seed=args.seed)
        res = {"in_bundle": {}, "new": {}}
        for qd, td in itertools.permutations(sorted(vecs), 2):
            tr = fit_rows[td]
            for kind, rows in (("in_bundle", fit_rows[qd]), ("new", new_rows[qd])):
                s = scores(al, vecs[qd][rows], qd, td, vecs[qd][fit_rows[qd]], vecs[td][tr])
                m = retrieval_metrics(s, labs[qd].categories[rows], labs[td].categories[tr],
                                      labs[qd].identities[rows], labs[td].identities[tr], (1,))
                res[kind][f"{qd}->{td}"] = {"top1_identity": round(float(m["top1_identity"]), 4),
                                            "map": round(float(m["map"]), 4)}
        for kind in ("in_bundle", "new"):
            res[f"mean_top1_{kind}"] = round(float(np.mean([p["top1_identity"] for p in res[kind].values()])), 4)
            res[f"mean_map_{kind}"] = round(float(np.mean([p["map"] for p in res[kind].values()])), 4)
        out["variants"][name] = res
        print(f"{name:20s} in bundle: top-1 {res['mean_top1_in_bundle']:.3f} mAP {res['mean_map_in_bundle']:.3f} | "
              f"new pictures: top-1 {res['mean_top1_new']:.3f} mAP {res['mean_map_new']:.3f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
