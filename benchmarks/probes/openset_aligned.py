#!/usr/bin/env python
"""Which label-free "no match" score separates on the ALIGNED space, and which threshold transfers?

Reads a bundle exported on a whole data set (every concept in every domain) and rebuilds, from its
stored int8 vectors, the situations a user meets:
  close      every domain keeps every concept: the right answer is "match" for every query;
  open/SEED  the target domain keeps a seeded half of the concepts (uem.eval.protocols.random_half
             over the union of categories, as `uemctl eval --protocol open` draws it); queries of the
             other half must be answered "no match".
For each situation the alignment is refitted on exactly the vectors a bundle of that data would
hold (label-free, `uem.export.align.fit_alignment` with the bundle's defaults), so the scores are
the ones an export of that data would see. Queries are the source items themselves (what `uemctl
eval` does on a bundle of the same images; the own-domain neighbour that is the query is skipped).
Labels (the category folder in each item id) are read only to score.

    .venv/bin/python benchmarks/probes/openset_aligned.py BUNDLE --target notomono --seeds 2024,2025,2026,0 \
        --out benchmarks/results/openset_aligned_emoji3.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from uem.engine.bundle import read_bundle
from uem.eval.metrics import auroc, h_score
from uem.eval.protocols import random_half
from uem.export.align import AlignConfig, fit_alignment
from uem.engine.openset.contrast import otsu_threshold


def load(bundle: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    info = read_bundle(bundle)
    vecs, cats = {}, {}
    for d, di in info.domains.items():
        vecs[d] = info.load_vectors(d, mmap=False)
        cats[d] = np.array([it["id"].split("/")[0] for it in di.items])
    return vecs, cats


def topk(sims: np.ndarray, k: int) -> np.ndarray:
    k = min(k, sims.shape[1])
    return -np.sort(-np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:], axis=1)


def sinkhorn_uot_mass(cost: np.ndarray, eps: float, tau: float, iters: int = 200) -> np.ndarray:
    """Row masses (times n_rows) of entropic unbalanced OT with KL-relaxed marginals (Chizat et al.
    2018 scaling iterations), uniform marginals. Rows whose concept has no column partner get little
    mass (UniOT's reading)."""
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    kernel = np.exp(-(cost - cost.min()) / eps)     # shifted: a constant factor the scalings absorb
    lam = tau / (tau + eps)
    u, v = np.ones(n), np.ones(m)
    for _ in range(iters):
        u = (a / np.maximum(kernel @ v, 1e-300)) ** lam
        v = (b / np.maximum(kernel.T @ u, 1e-300)) ** lam
    row = u * (kernel @ v)
    return row * n


def scores_for(src: np.ndarray, tgt: np.ndarray, k: int = 5, kc: int = 10, uot: bool = False,
               src_in_target: np.ndarray | None = None):
    """Per source row: candidate scores, higher = more likely private."""
    own = src @ src.T
    np.fill_diagonal(own, -np.inf)               # the query itself
    st = (src if src_in_target is None else src_in_target) @ tgt.T   # cross-domain: in the target's space
    own_k = topk(own, k).mean(1)
    tgt_k = topk(st, k).mean(1)
    out = {"nearest": -st.max(1), "contrast": own_k - tgt_k}
    # CSLS: 2cos - r_q - r_t (r: mean of the kc best cosines into the other domain)
    r_q = topk(st, kc).mean(1)
    r_t = topk(st.T, kc).mean(1)
    csls = 2 * st - r_q[:, None] - r_t[None, :]
    best = csls.argmax(1)
    out["csls"] = -csls.max(1)
    # contrast against CSLS-corrected target similarity: own crowding vs hubness-corrected target
    out["csls_contrast"] = own_k - (topk(csls, k).mean(1) + r_q)  # back on the cosine scale
    # mutual: is q among the sources the best target item would pick (its rank among all sources)
    ts = st.T                                      # target x source cosines
    col = ts[best]                                 # each query's best item's cosines to all sources
    rank = (col > st[np.arange(len(src)), best][:, None]).sum(1)
    out["mutual_rank"] = np.log1p(rank)
    # margin of q's cosine to its best item against that item's kc-th best source
    out["mutual_margin"] = topk(col, kc)[:, -1] - st[np.arange(len(src)), best]
    # neighbourhood mix: fraction of target items among the q's 20 nearest in source ∪ target
    K = 20
    allsim = np.concatenate([own, st], 1)
    idx = np.argpartition(-allsim, K, axis=1)[:, :K]
    frac_t = (idx >= len(src)).mean(1)
    out["mix20"] = -frac_t
    # unbalanced OT mass (cost 1 - cos)
    if uot:
        out["uot"] = -sinkhorn_uot_mass(1 - st.astype(np.float64), 0.02, 0.2)
    # label-free combination: each score standardised by its median / IQR over all source items
    z = lambda v: (v - np.median(v)) / max(np.subtract(*np.quantile(v, [0.75, 0.25])), 1e-9)  # noqa: E731
    out["nearest+contrast"] = z(out["nearest"]) + z(out["contrast"])
    out["nearest+mutual"] = z(out["nearest"]) + z(out["mutual_margin"])
    # anchors: source rows that are mutual CSLS nearest neighbours with some target row
    best_s = np.argmax(2 * ts - r_t[:, None] - r_q[None, :], axis=1)
    anchors = best_s[best] == np.arange(len(src))
    return out, anchors


# thresholds with a meaning of their own (no quantile): CSLS <= 0 means no target item is closer to
# the query than the two sides' usual cross-domain neighbours are; a margin > 0 means the query is
# not among its best item's 10 nearest source items (rank >= 10)
FIXED = {"csls": (-0.05, 0.0, 0.05), "mutual_margin": (0.0, 0.02), "mutual_rank": (float(np.log1p(10)), float(np.log1p(5)))}


def rate(score: np.ndarray, thr: float, private: np.ndarray) -> dict:
    rej = score > thr
    det = float(rej[private].mean()) if private.any() else float("nan")
    acc = float((~rej[~private]).mean())
    return {"detection": det, "acceptance": acc, "h": h_score(det, acc) if private.any() else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--target", required=True)
    ap.add_argument("--seeds", default="2024,2025,2026")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--uot", action="store_true", help="also the unbalanced-OT mass (slow)")
    args = ap.parse_args()
    vecs, cats = load(args.bundle)
    cfg = AlignConfig()
    situations = [("close", None)] + [(f"open/{s}", int(s)) for s in args.seeds.split(",")]
    report = []
    for name, seed in situations:
        keep = {d: np.ones(len(v), bool) for d, v in vecs.items()}
        if seed is not None:
            kept = set(random_half(np.concatenate(list(cats.values())), seed))
            keep[args.target] = np.isin(cats[args.target], sorted(kept))
        sub = {d: vecs[d][keep[d]] for d in vecs}
        alignment, _ = fit_alignment(sub, cfg, seed=0)
        aligned = {d: alignment.align(v, d) for d, v in sub.items()}
        sources = [d for d in vecs if d != args.target] if seed is not None else list(vecs)
        for s in sources:
            targets = [args.target] if seed is not None else [t for t in vecs if t != s]
            for t in targets:
                private = ~np.isin(cats[s][keep[s]], np.unique(cats[t][keep[t]]))
                sc, anchors = scores_for(aligned[s], aligned[t], uot=args.uot,
                                         src_in_target=alignment.to_target(aligned[s], s, t))
                row = {"situation": name, "pair": f"{s}->{t}", "n": int(len(private)),
                       "n_private": int(private.sum()), "n_anchors": int(anchors.sum()),
                       "anchor_private": float(private[anchors].mean()), "scores": {}}
                for key, v in sc.items():
                    r = {"otsu": rate(v, otsu_threshold(v), private)}
                    if private.any():
                        r["auroc"] = auroc(v, private)
                    for c in FIXED.get(key, ()):
                        r[f"fixed_{c:g}"] = rate(v, c, private)
                    for qn in (0.9, 0.95, 0.98, 0.99):
                        r[f"anchor_q{qn}"] = rate(v, float(np.quantile(v[anchors], qn)), private)
                    row["scores"][key] = r
                    row.setdefault("quantiles", {})[key] = np.quantile(v, [0.05, 0.25, 0.5, 0.75, 0.95]).round(4).tolist()
                report.append(row)
                print(f"{name:10s} {row['pair']:22s} priv {row['n_private']:4d} anchors {row['n_anchors']} "
                      f"(private {row['anchor_private']:.3f})", flush=True)
                for key, r in row["scores"].items():
                    cells = "  ".join(f"{th} {x['acceptance']:.3f}/{'-' if x['h'] is None else f'{x[chr(104)]:.3f}'}"
                                      for th, x in r.items() if th != "auroc")
                    print(f"    {key:18s} auroc {r.get('auroc', float('nan')):.3f}  {cells}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
