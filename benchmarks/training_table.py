#!/usr/bin/env python
"""Markdown tables from benchmarks/training_grid.py results, next to the pooled untrained bundle.

    .venv/bin/python benchmarks/training_table.py benchmarks/results/training_grid_emoji3.json \\
        --baseline benchmarks/results/eval_emoji3_pretrained_default/results.json [--floor]

Per config: mean ± std over its seeds of the int8 bundle's (when exported) and the fp32 fast
path's top-1 identity / mAP per ordered pair; the baseline is `uemctl eval` on the bundle that
`uemctl export --pretrained` builds (pooled block 13, no training). `--floor`: also each pair's
ratio to docs/benchmarks.md's floor (emoji3 only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def fmt(xs: list[float]) -> str:
    return f"{np.mean(xs):.3f}" + (f" ± {np.std(xs):.3f}" if len(xs) > 1 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("grid", type=Path)
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--floor", action="store_true")
    args = ap.parse_args()
    rows = json.loads(args.grid.read_text())["rows"]
    base = {p["pair"]: p for p in json.loads(args.baseline.read_text())["pairs"]}
    pairs = sorted(base)
    print("| config | path | seeds | mean top-1 | mean mAP | " + " | ".join(pairs) + " | train s |")
    print("|---" * (len(pairs) + 6) + "|")
    print(f"| pooled block 13, untrained (`export --pretrained`) | int8 | - | "
          f"{np.mean([base[p]['top1_identity'] for p in pairs]):.3f} | {np.mean([base[p]['map'] for p in pairs]):.3f} | "
          + " | ".join(f"{base[p]['top1_identity']:.3f} / {base[p]['map']:.3f}" for p in pairs) + " | - |")
    configs = list(dict.fromkeys(r["config"] for r in rows))
    for c in configs:
        mine = [r for r in rows if r["config"] == c]
        for path in ("int8", "fp32"):
            got = [r[path] for r in mine if path in r]
            if not got:
                continue
            seeds = ",".join(str(r["seed"]) for r in mine if path in r)
            cells = " | ".join(f"{fmt([g['pairs'][p]['top1_identity'] for g in got])} / "
                               f"{np.mean([g['pairs'][p]['map'] for g in got]):.3f}" for p in pairs)
            print(f"| {c} | {path} | {seeds} | {fmt([g['mean_top1_identity'] for g in got])} | "
                  f"{fmt([g['mean_map'] for g in got])} | {cells} | "
                  f"{np.mean([r['train_seconds_cached'] for r in mine]):.0f} |")
    first = next((r for r in rows if r["config"] == "default" and r["mined_precision_per_epoch"]), None)
    if first is not None:
        print()
        print(f"Mined pairs per epoch, default, seed {first['seed']} (pairs, precision = same identity, true pairs):")
        print()
        keys = list(first["mined_precision_per_epoch"][0])
        print("| epoch | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 1) + "|")
        for e, ep in enumerate(first["mined_precision_per_epoch"], 1):
            print(f"| {e} | " + " | ".join(f"{ep[k]['pairs']}, {ep[k]['precision']:.3f}, "
                                           f"{round(ep[k]['pairs'] * ep[k]['precision'])}" for k in keys) + " |")
    if args.floor:
        from uem.train.floor import REFERENCE

        default = [r["int8"] for r in rows if r["config"] == "default" and "int8" in r]
        print()
        print("| pair | floor top-1 | default int8 top-1 | x floor | untrained pooled | x untrained |")
        print("|---|---|---|---|---|---|")
        for p in pairs:
            v = np.mean([g["pairs"][p]["top1_identity"] for g in default])
            f = REFERENCE[p]["top1_identity"]
            b = base[p]["top1_identity"]
            print(f"| {p} | {f:.3f} | {v:.3f} | {v / f:.2f}x | {b:.3f} | {v / b:.2f}x |")
        m = np.mean([g["mean_top1_identity"] for g in default])
        b = np.mean([base[p]["top1_identity"] for p in pairs])
        print(f"| 6-pair mean | | {m:.3f} | | {b:.3f} | {m / b:.2f}x |")


if __name__ == "__main__":
    main()
