#!/usr/bin/env python
"""Markdown tables from benchmarks/wild_queries.py results (what RESULTS.md "Wild queries" shows).

    .venv/bin/python benchmarks/wild_table.py benchmarks/results/wild_emoji3.json [--pairs]
    .venv/bin/python benchmarks/wild_table.py --openset benchmarks/results/openset_wild_emoji3.json

Per configuration (mean ± std over its seeds): clean, reframed and background top-1 identity (or
P@1 category where the domains share no identity), mAP@All and "no match" acceptance; the wild /
clean ratios; training time and peak memory. `--pairs`: also every pair of the first seed of
`default`, with the targets checked: reframed top-1 >= 0.8 x clean, background >= 0.6 x clean,
acceptance >= 0.9 reframed and >= 0.85 on a background, wild mAP above the clean floor (the
`floor` row of the same file, else the reference floor of docs/benchmarks.md for emoji3).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from uem.train.floor import REFERENCE

VIEWS = ("clean", "reframed", "background")
# docs/benchmarks.md: the floor (untrained Lite0, pooled, 224 px, letter-boxed) on emoji3, mAP@All
EMOJI3_FLOOR_MAP = {pair: ref["map"] for pair, ref in REFERENCE.items()}


def _ms(xs) -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return f"{np.mean(xs):.3f}" + (f" ± {np.std(xs):.3f}" if len(xs) > 1 else "")


def hit_key(rows: list[dict]) -> str:
    """top-1 identity, or P@1 (category) where the domains share no identity (photo3)."""
    first = next(iter(rows[0]["pairs"]["clean"].values()))
    return "top1_identity" if first.get("top1_identity") is not None else "p_at_1"


def mean_over_pairs(row: dict, view: str, key: str) -> float | None:
    vals = [p.get(key) for p in row["pairs"][view].values() if p.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def summary_table(rows: list[dict]) -> list[str]:
    key = hit_key(rows)
    label = "top-1" if key == "top1_identity" else "P@1"
    out = [f"| config | seeds | {label} clean | reframed | background | ratio r / b | mAP clean | reframed | "
           f"background | accept clean | reframed | background | train s | train GB |",
           "|" + "---|" * 14]
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        hits = {v: [mean_over_pairs(r, v, key) for r in mine] for v in VIEWS}
        maps = {v: [mean_over_pairs(r, v, "map") for r in mine] for v in VIEWS}
        acc = {v: [mean_over_pairs(r, v, "acceptance") for r in mine] for v in VIEWS}
        ratios = [f"{np.mean(hits[v]) / np.mean(hits['clean']):.2f}" if hits["clean"][0] else "n/a"
                  for v in ("reframed", "background")]
        train = [r.get("train_s") for r in mine if r.get("train_s")]
        rss = [r.get("train_rss_gb") for r in mine if r.get("train_rss_gb")]
        out.append(f"| {config} | {','.join(str(r['seed']) for r in mine)} | "
                   + " | ".join(_ms(hits[v]) for v in VIEWS) + f" | {' / '.join(ratios)} | "
                   + " | ".join(_ms(maps[v]) for v in VIEWS) + " | " + " | ".join(_ms(acc[v]) for v in VIEWS)
                   + f" | {_ms(train) if train else '-'} | {_ms(rss) if rss else '-'} |")
    return out


def pair_table(rows: list[dict], data_name: str, config: str = "default", floor_file: Path | None = None) -> list[str]:
    row = next((r for r in rows if r["config"] == config), None)
    if row is None:
        return []
    key = hit_key(rows)
    floor_row = next((r for r in rows if r["config"] == "floor"), None)
    floor = ({p: v["map"] for p, v in floor_row["pairs"]["clean"].items()} if floor_row
             else {p["pair"]: p["map"] for p in json.loads(floor_file.read_text())["pairs"]} if floor_file
             else EMOJI3_FLOOR_MAP if data_name == "emoji3" else {})
    out = [f"| pair ({config}, seed {row['seed']}) | clean | reframed (x) | background (x) | mAP clean / r / b | "
           "floor mAP | accept r / b | targets |", "|---|---|---|---|---|---|---|---|"]
    for pair, clean in row["pairs"]["clean"].items():
        r, b = row["pairs"]["reframed"][pair], row["pairs"]["background"][pair]
        c = clean[key]
        if not c:      # no clean hit to compare with: ratios mean nothing
            continue
        fails = []
        if c and r[key] < 0.8 * c:
            fails.append("reframed < 0.8x")
        if c and b[key] < 0.6 * c:
            fails.append("background < 0.6x")
        if r["acceptance"] is not None and r["acceptance"] < 0.9:
            fails.append("accept r < 0.9")
        if b["acceptance"] is not None and b["acceptance"] < 0.85:
            fails.append("accept b < 0.85")
        f = floor.get(pair)
        if f is not None and min(r["map"], b["map"]) <= f:
            fails.append("wild mAP <= floor")
        out.append(f"| {pair} | {c:.3f} | {r[key]:.3f} ({r[key] / c:.2f}) | {b[key]:.3f} ({b[key] / c:.2f}) | "
                   f"{clean['map']:.3f} / {r['map']:.3f} / {b['map']:.3f} | {'-' if f is None else f'{f:.3f}'} | "
                   f"{r['acceptance'] if r['acceptance'] is None else round(r['acceptance'], 3)} / "
                   f"{b['acceptance'] if b['acceptance'] is None else round(b['acceptance'], 3)} | "
                   f"{'met' if not fails else ', '.join(fails)} |")
    return out


def openset_table(path: Path) -> list[str]:
    """benchmarks/openset_splits.py --queries wild results: per query kind, the close-set
    acceptance and, over the open splits, mean detection / acceptance / H / AUROC."""
    rows = json.loads(path.read_text())["rows"]
    out = ["| queries | close: acceptance | open: detection | open: acceptance | open: H | open: AUROC |",
           "|---|---|---|---|---|---|"]
    for view in dict.fromkeys(r.get("queries", "clean") for r in rows):
        mine = [r for r in rows if r.get("queries", "clean") == view]
        close = [r["known_acceptance"] for r in mine if r["situation"] == "close"]
        opened = [r for r in mine if r["situation"] != "close"]

        def m(key):
            vals = [r[key] for r in opened if r[key] is not None]
            return f"{np.mean(vals):.3f}" if vals else "n/a"
        out.append(f"| {view} | {np.mean(close):.3f} | {m('private_detection')} | {m('known_acceptance')} | "
                   f"{m('h_score')} | {m('auroc')} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--pairs", action="store_true")
    ap.add_argument("--openset", action="store_true", help="RESULTS is an openset_splits.py --queries wild file")
    ap.add_argument("--floor", type=Path, help="the floor's harness results (benchmarks/floor.py --json)")
    ap.add_argument("--config", default="default", help="the configuration --pairs shows")
    args = ap.parse_args()
    if args.openset:
        print("\n".join(openset_table(args.results)))
        return
    rows = json.loads(args.results.read_text())["rows"]
    data_name = Path(rows[0]["data"]).name
    print("\n".join(summary_table(rows)))
    if args.pairs:
        print()
        print("\n".join(pair_table(rows, data_name, config=args.config, floor_file=args.floor)))


if __name__ == "__main__":
    main()

