"""Probe: open-set metrics of the engine's rule on a bundle's int8 vectors, with the prototypes
rebuilt under the global vs the local merge rule (uem.train.prototypes.pair_and_merge).

    .venv/bin/python benchmarks/probes/merge_rule_openset.py BUNDLE DATA [--pairs twemoji->notomono,...]

DATA is the open-set copy the bundle was trained on (e.g. `uemctl demo`'s demo/data, or
benchmarks/ablation_grid.py's data_open_<seed>); labels are read only to score.
"""

import argparse
from pathlib import Path

import numpy as np

from uem.datasets.folders import scan
from uem.engine import Engine
from uem.engine.openset import OpenSetRule
from uem.eval.engine_scores import rule_reject_fn
from uem.eval.harness import evaluate
from uem.train.prototypes import build_prototype_graph

ap = argparse.ArgumentParser()
ap.add_argument("bundle", type=Path)
ap.add_argument("data", type=Path)
ap.add_argument("--pairs", default="twemoji->notomono,openmoji->notomono")
ap.add_argument("--seed", type=int, default=2024)
args = ap.parse_args()
eng = Engine.open(args.bundle)
files = scan(args.data)
vecs = {d: eng.embed(p) for d, p in files.items()}
by_path = {str(p.resolve()): v for d, ps in files.items() for p, v in zip(ps, vecs[d])}


def embed(paths):
    """The vectors embedded above, looked up by path (each image is embedded once)."""
    return np.stack([by_path[str(Path(p).resolve())] for p in paths])


for rule in ("global", "local"):
    g = build_prototype_graph(vecs, seed=args.seed, rule=rule)
    r = OpenSetRule(g, {})
    res = evaluate(embed, args.data,
                   pairs=args.pairs.split(","), reject_fn=rule_reject_fn(r), n_examples=0, keep_scores=False)
    for p in res["pairs"]:
        o = p["open_set"]
        print(f"| {rule} | {len(g.links)} | {p['pair']} | " + " | ".join(
            f"{o[k]:.3f}" for k in ("private_detection", "known_acceptance", "h_score", "auroc")) + " |", flush=True)
