"""Probe: which label-free score tells a query whose concept is missing from the target domain?

Scores every query of the given pairs with several candidate rejection scores over a bundle's int8
vectors (the engine's own embeddings), and prints AUROC and the H-score at Otsu's label-free threshold
(and, for reference only, the best H any threshold could reach — that one reads labels).

    .venv/bin/python benchmarks/probes/openset_scores.py BUNDLE DATA [--pairs twemoji->notomono,...]

DATA is the open-set copy the bundle was trained on (benchmarks/ablation_grid.py's data_open_<seed>);
labels are read only to score. Candidates:
  prototype     the engine's prototype rule (docs/method.md) with the bundle's links
  nearest       1 - cosine to the nearest target item
  centred       the same after subtracting each domain's mean embedding
  contrast-k    mean cos of the k nearest own-domain items (self skipped) - mean cos of the k nearest
                target items (the engine's neighbourhood contrast; k = 5 is the default)
  contrast-kc   the same on domain-centred vectors
  cycle         cos(t, nearest own-domain item of t) - cos(t, q), t = q's nearest target item
"""

import argparse
from pathlib import Path

import numpy as np

from uem.datasets.folders import scan
from uem.engine import Engine
from uem.engine.geometry import unit_rows
from uem.engine.openset import neighbourhood_contrast
from uem.eval.labels import load_labels
from uem.eval.metrics import open_set_metrics
from uem.engine.openset.base import top_cosines
from uem.engine.openset.contrast import otsu_threshold
from uem.eval.engine_scores import rule_reject_fn

ap = argparse.ArgumentParser()
ap.add_argument("bundle", type=Path)
ap.add_argument("data", type=Path)
ap.add_argument("--pairs", default="twemoji->notomono,openmoji->notomono")
args = ap.parse_args()

eng = Engine.open(args.bundle)
labels = load_labels(args.data)
vecs = {d: unit_rows(eng.embed(list(labels[d].paths))) for d in labels}
means = {d: v.mean(0) for d, v in vecs.items()}
centred = {d: unit_rows(v - means[d]) for d, v in vecs.items()}


def contrast(space, k):
    return lambda s, t: neighbourhood_contrast(top_cosines(space[s], space[s], k + 1),
                                               top_cosines(space[s], space[t], k), k)


def cycle(s, t):
    q, tv = vecs[s], vecs[t]
    back = tv[(q @ tv.T).argmax(1)]
    return (back @ q.T).max(1) - (back * q).sum(1)


def prototype(s, t):
    accepted, score = rule_reject_fn(eng.snapshot().rule)(vecs[s], s, t, vecs[t])
    return score, accepted   # its own decision (radius test), not an Otsu split


candidates = {
    "prototype": prototype,
    "nearest": lambda s, t: 1 - (vecs[s] @ vecs[t].T).max(1),
    "centred": lambda s, t: 1 - (centred[s] @ centred[t].T).max(1),
    **{f"contrast-{k}": contrast(vecs, k) for k in (3, 5, 10, 20)},
    **{f"contrast-{k}c": contrast(centred, k) for k in (5,)},
    "cycle": cycle,
}
print("| score | pair | AUROC | H at Otsu's threshold (detection / acceptance) | best H (reads labels) |")
print("|---|---|---|---|---|")
for pair in args.pairs.split(","):
    s, t = pair.split("->")
    private = ~np.isin(labels[s].categories, np.unique(labels[t].categories))
    for name, fn in candidates.items():
        out = fn(s, t)
        score, accepted = (out if isinstance(out, tuple) else (out, None))
        score = np.asarray(score, np.float64)
        auroc = open_set_metrics(np.ones(len(score), bool), score, private)["auroc"]
        m = open_set_metrics(score <= otsu_threshold(score) if accepted is None else accepted, score, private)
        best = max(open_set_metrics(score <= c, score, private)["h_score"]
                   for c in np.quantile(score, np.linspace(0.01, 0.99, 99)))
        print(f"| {name} | {pair} | {auroc:.3f} | {m['h_score']:.3f} ({m['private_detection']:.2f} / "
              f"{m['known_acceptance']:.2f}) | {best:.3f} |", flush=True)
