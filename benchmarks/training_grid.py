#!/usr/bin/env python
"""Training designs side by side on one shared trunk cache: top-1 / mAP per ordered pair, the mined
pairs' precision per epoch, minutes of training; optionally through the exported int8 bundle.

    .venv/bin/python benchmarks/training_grid.py DATA --cache RUN/trunk_cache.pt \\
        --configs default,untrained,uem,idse+pairs --seeds 2024,1,2 [--int8 default,untrained] \\
        --out benchmarks/results/training_grid_emoji3.json

`--cache`: a trunk cache of the default freeze point and views for DATA (a run kept with
`uemctl train --keep-cache`); every row trains on it (`train(trunk_features=...)`), so the rows
differ only by what they name. The training seed changes batch order and views; the augmented views
themselves are the cache's (one draw). "fp32" scores: the run's clean cached embeddings aligned as
export aligns them (uem.export.align.fit_alignment, default AlignConfig) and ranked as the engine
ranks (pair_score_matrix, CSLS). "int8": `export_run` with the default ExportConfig, then
`uem.eval.evaluate_bundle` (what `uemctl eval` reports). Labels are read here, never by training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from uem.eval.labels import load_labels
from uem.export.align import AlignConfig
from uem.export.alignscore import score
from uem.train.config import TrainConfig


# name -> TrainConfig changes (from the defaults)
CONFIGS: dict[str, dict] = {
    "default": {},
    "untrained": {"epochs_pairs": 0},                                    # the grid head at its PCA start
    "pairs-no-instance": {"pairs_instance_weight": 0.0},
    "pairs-instance0.3": {"pairs_instance_weight": 0.3},
    "pairs-8ep": {"epochs_pairs": 8},
    "pairs-tau0.1": {"pairs_tau": 0.1},
    "uem": {"epochs_idse": 4, "epochs_cdsm": 2, "epochs_pairs": 0},      # docs/method.md's stages alone
    "uem-no-merge": {"epochs_idse": 4, "epochs_cdsm": 2, "epochs_pairs": 0, "merge": False},
    "uem-no-sel": {"epochs_idse": 4, "epochs_cdsm": 2, "epochs_pairs": 0, "sel": False},
    "uem-no-spda": {"epochs_idse": 4, "epochs_cdsm": 2, "epochs_pairs": 0, "spda": False},
    "uem-sn2m": {"epochs_idse": 4, "epochs_cdsm": 2, "epochs_pairs": 0, "plain_nn": False},
    "idse+pairs": {"epochs_idse": 2},
    "cdsm+pairs": {"epochs_cdsm": 2},
    "uem+pairs": {"epochs_idse": 4, "epochs_cdsm": 2},
    "linear-head": {"model.head": "linear", "model.embed_dim": 128, "epochs_idse": 4, "epochs_cdsm": 2,
                    "epochs_pairs": 0, "lr": 0.03, "batch_size": 64},     # the previous default
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--configs", default="default,untrained")
    ap.add_argument("--seeds", default="2024")
    ap.add_argument("--int8", default="", help="configs also exported and scored as int8 bundles")
    ap.add_argument("--runs", type=Path, default=Path("runs/grid"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from uem.train.trainer import embed_cached, train
    from uem.train.run import load_encoder

    obj = torch.load(args.cache, map_location="cpu", weights_only=True)
    # a run's trunk_cache.pt, or a probe's {"b13": ...} (block-13 outputs, the default freeze point)
    feats = obj["features"] if "features" in obj else obj["b13"]
    base = TrainConfig(data=str(args.data.resolve()))
    labs = load_labels(args.data, base.domains or None)  # in scan order: the trainer's image order
    domains = list(labs)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {"data": str(args.data), "rows": []}
    done = {(r["config"], r["seed"]) for r in results["rows"]}
    int8 = set(filter(None, args.int8.split(",")))
    for name, seed in itertools.product(args.configs.split(","), [int(s) for s in args.seeds.split(",")]):
        if (name, seed) in done:
            continue
        cfg = base.with_changes({**CONFIGS[name], "seed": seed, "views": feats.shape[0] - 1})
        precision: list[dict] = []

        def observe(epoch, mined, precision=precision):
            row = {}
            for (d, e), n in mined.counts().items():
                i, j = mined.pairs(d, e)
                same = labs[domains[d]].identities[i] == labs[domains[e]].identities[j]
                row[f"{domains[d]}-{domains[e]}"] = {"pairs": n, "precision": round(float(same.mean()), 4) if n else None}
            precision.append(row)

        run = args.runs / f"{args.data.name}_{name}_{seed}"
        t0 = time.perf_counter()
        train(cfg, run, trunk_features=feats, progress=False, observer=observe)
        seconds = time.perf_counter() - t0
        encoder, _ = load_encoder(run)
        clean = embed_cached(encoder, feats[0], torch.device("cpu")).numpy()
        sizes = [len(labs[d]) for d in domains]
        starts = np.cumsum([0] + sizes)
        vecs = {d: clean[starts[k]:starts[k + 1]] for k, d in enumerate(domains)}
        fp32 = score(vecs, labs, AlignConfig())
        row = {"config": name, "seed": seed, "changes": CONFIGS[name], "train_seconds_cached": round(seconds, 1),
               "fp32": fp32, "mined_precision_per_epoch": precision}
        if name in int8:
            from uem.eval.bundle_eval import evaluate_bundle
            from uem.export.config import ExportConfig
            from uem.export.pipeline import export_run

            bundle = run.with_suffix(".uem")
            t1 = time.perf_counter()
            export_run(run, bundle, ExportConfig(), progress=False)
            ev = evaluate_bundle(bundle, args.data, sheets=False)
            row["int8"] = {"export_seconds": round(time.perf_counter() - t1, 1),
                           "pairs": {p["pair"]: {"top1_identity": p["top1_identity"], "map": p["map"]}
                                     for p in ev["pairs"]}}
            tops = [v["top1_identity"] for v in row["int8"]["pairs"].values()]
            maps = [v["map"] for v in row["int8"]["pairs"].values()]
            row["int8"]["mean_top1_identity"] = round(float(np.mean(tops)), 4)
            row["int8"]["mean_map"] = round(float(np.mean(maps)), 4)
        results["rows"].append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        msg = (f"{name:18s} seed {seed:5d}  fp32 top-1 {fp32['mean_top1_identity']:.3f} mAP {fp32['mean_map']:.3f}  "
               + "  ".join(f"{p} {v['top1_identity']:.3f}" for p, v in fp32["pairs"].items())
               + f"  train {seconds:.0f} s")
        if "int8" in row:
            msg += f"  | int8 top-1 {row['int8']['mean_top1_identity']:.3f} mAP {row['int8']['mean_map']:.3f}"
        if precision:
            msg += "  | precision " + " -> ".join(
                "/".join(f"{v['precision']:.3f}" for v in ep.values() if v["precision"] is not None) for ep in precision)
        print(msg, flush=True)


if __name__ == "__main__":
    main()
