"""The Markdown tables of RESULTS-archive.md "Aligned retrieval", printed from the probes' JSON files.

    python benchmarks/probes/alignment_tables.py [--results benchmarks/results]

Reads alignment_grid_<set>_<model>.json (alignment_grid.py) and readout_grid_<set>.json
(readout_grid.py) and prints, per set, {bundle without training, trained default} x variants
with the 6-pair (or 12-pair) means and every ordered pair (top-1 identity / mAP@All), and the
read-out table. Nothing is computed here but means and formatting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROWS = ["none", "mean", "mean+csls", "mean+map+csls", "whiten5.0", "whiten5.0+csls", "whiten5.0+map",
        "whiten5.0+map+csls", "whiten0.1+map+csls", "whiten1.0+map+csls", "whiten2.0+map+csls",
        "whiten10+map+csls"]


def _cells(v: dict, pairs: list[str]) -> str:
    return " | ".join(f"{v['pairs'][p]['top1_identity']:.3f} / {v['pairs'][p]['map']:.3f}" for p in pairs)


def grid_table(path: Path, title: str) -> str:
    r = json.loads(path.read_text())
    variants = r["variants"]
    pairs = list(next(iter(variants.values()))["pairs"])
    out = [f"**{title}** (`{path.name}`; source domain inferred right: held out "
           f"{r['source_inference']['held_out']:.4f}, in-sample {r['source_inference']['in_sample']:.4f})", "",
           "| read-out after the encoder | mean top-1 | mean mAP | " + " | ".join(pairs) + " |",
           "|---|---|---|" + "---|" * len(pairs)]
    for name in [v for v in ROWS if v in variants] + [v for v in variants if v not in ROWS]:
        v = variants[name]
        out.append(f"| {name} | {v['mean_top1_identity']:.3f} | {v['mean_map']:.3f} | {_cells(v, pairs)} |")
    for f, v in (r.get("drift") or {}).items():
        name = v.get("variant", "whiten5.0+map+csls")  # runs before the variant was recorded: that default
        out.append(f"| {name}, fitted on {float(f):.0%} of each domain | {v['mean_top1_identity']:.3f} | "
                   f"{v['mean_map']:.3f} | {_cells(v, pairs)} |")
    return "\n".join(out)


def readout_table(path: Path, title: str) -> str:
    r = json.loads(path.read_text())
    out = [f"**{title}** (`{path.name}`, fp32 torch features)", "",
           "| size | block | views | variant | mean top-1 | mean mAP | torch ms / image (batch 1, 1 thread) |",
           "|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        out.append(f"| {row['size']} | {row['block']} | {row['views']} | {row['variant']} | "
                   f"{row['mean_top1_identity']:.3f} | {row['mean_map']:.3f} | {row['torch_ms_b1_1t']:.1f} |")
    return "\n".join(out)


def heldout_table(path: Path, title: str) -> str:
    r = json.loads(path.read_text())
    out = [f"**{title}** (`{path.name}`; half of each domain indexed, means over all ordered pairs)", "",
           "| read-out | top-1, queries in the bundle | top-1, new pictures | mAP, in the bundle | mAP, new pictures |",
           "|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        out.append(f"| {name} | {v['mean_top1_in_bundle']:.3f} | {v['mean_top1_new']:.3f} | "
                   f"{v['mean_map_in_bundle']:.3f} | {v['mean_map_new']:.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = ap.parse_args()
    for s in ("emoji3", "phosphor4"):
        for model, title in (("pretrained", "bundle without training"), ("trained", "trained default")):
            p = args.results / f"alignment_grid_{s}_{model}.json"
            if p.is_file():
                print(grid_table(p, f"{s}, {title}"), "\n", sep="")
        p = args.results / f"alignment_heldout_{s}_pretrained.json"
        if p.is_file():
            print(heldout_table(p, f"{s}, bundle without training: queries in the bundle vs new pictures"), "\n", sep="")
        p = args.results / f"readout_grid_{s}.json"
        if p.is_file():
            print(readout_table(p, f"{s}: which read-out of the untrained network"), "\n", sep="")


if __name__ == "__main__":
    main()
