#!/usr/bin/env python
"""The ablation grid: UEM's variants x the benchmark's protocols x seeds on emoji3, each trained,
exported and measured through the int8 bundle (the split rules themselves are uem.eval.protocols).

Each job = (variant, protocol, seed): build the protocol's data (a symlink copy of emoji3 in which one
domain keeps a seeded half of its subgroups), train on it without labels (transductive, as in the
paper), export the int8 bundle, and score it with `uem.eval.bundle_eval` (the engine's own
embeddings and open-set rule). Steps whose output exists are skipped, so the grid can be resumed.

    protocol close    all domains keep everything; all 6 ordered pairs
    protocol open     notomono keeps a seeded half (R = notomono): twemoji->notomono, openmoji->notomono;
                      queries of the dropped subgroups must be answered "no match"
    protocol partial  twemoji keeps a seeded half (Q = twemoji): twemoji->notomono, twemoji->openmoji

Variants are the trainer's switches: full (UEM as specified: the defaults, but with SN2M and the global merge bar), no-merge, no-sel, no-spda, plain-nn,
no-line-view, baseline (UCDIR-style: fixed K, no merge, no SEL); and floor: no training, the pretrained
224 px 1280-d features of docs/benchmarks.md's floor, with the engine's open-set rule (neighbourhood contrast)
calibrated on them exactly as export calibrates a bundle. `--reuse-cache` trains a variant on the
trunk cache of the `full` run with the same protocol and seed (same images, views and seed, so the
cache is exactly what the variant would compute; no-line-view takes its first half), which saves the
slow part of training; the variants then differ only in what they switch.

    .venv/bin/python benchmarks/ablation_grid.py --variants full --protocols close,open --seeds 2024 \
        --work /tmp/grid --out benchmarks/results/protocols.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

PAIRS = {
    "close": None,
    "open": ["twemoji->notomono", "openmoji->notomono"],
    "partial": ["twemoji->notomono", "twemoji->openmoji"],
}
HALF_OF = {"open": "notomono", "partial": "twemoji"}
# UEM as docs/method.md specifies it (SN2M in stage 2, its global merge bar: the grid in RESULTS-archive.md was
# trained so); each ablation removes one part
UEM = {"plain_nn": False, "merge_rule": "global"}
VARIANTS = {
    "full": dict(UEM),
    "no-merge": {**UEM, "merge": False},
    "no-sel": {**UEM, "sel": False},
    "no-spda": {**UEM, "spda": False},
    "plain-nn": {**UEM, "plain_nn": True},
    "no-line-view": {**UEM, "model.line_view": False},
    "baseline": {**UEM, "baseline_k": 98},
    "floor": None,
}
KEYS = ("top1_identity", "map", "map_class_balanced")
OPEN_KEYS = ("private_detection", "known_acceptance", "h_score", "auroc")


def protocol_data(data: Path, work: Path, protocol: str, seed: int) -> Path:
    if protocol == "close":
        return data
    from uem.demo import make_open_set_copy

    return Path(make_open_set_copy(data, work / f"data_{protocol}_{seed}", HALF_OF[protocol], seed)["path"])


def configure(data: Path, variant: str, seed: int, overrides: list[str]):
    from uem.train.config import ConfigError, TrainConfig

    settings = dict(VARIANTS[variant])
    for item in overrides:
        k, v = item.split("=", 1)
        settings[k] = json.loads(v)
    cfg = TrainConfig(data=str(data.resolve()), seed=seed, keep_cache=variant == "full")
    try:
        return cfg.with_changes(settings)
    except ConfigError as e:
        raise SystemExit(f"variant {variant} / --set: {e}") from None


def _summary(variant, protocol, seed, times, res, **more) -> dict:
    return {"variant": variant, "protocol": protocol, "seed": seed, "times": times, **more,
            "pairs": {p["pair"]: {**{k: p.get(k) for k in KEYS},
                                  **{k: (p.get("open_set") or {}).get(k) for k in OPEN_KEYS}}
                      for p in res["pairs"]}}


def run_floor(protocol: str, seed: int, args) -> dict:
    """The pretrained network, untrained, scored like a bundle (contrast rule calibrated without labels)."""
    from uem.train.floor import cached_embed_fn, floor_embed_fn

    from uem.datasets.folders import scan
    from uem.engine.geometry import unit_rows
    from uem.engine.openset import OpenSetRule
    from uem.engine.prototypes import PrototypeGraph
    from uem.eval.harness import evaluate
    from uem.engine.openset.base import top_cosines
    from uem.engine.openset.contrast import contrast_calibration
    from uem.eval.engine_scores import rule_reject_fn

    data = protocol_data(args.data, args.work, protocol, seed)
    t0 = time.perf_counter()
    embed = cached_embed_fn(floor_embed_fn(framing="letterbox"), args.work / "floor_cache")
    vecs = {d: unit_rows(embed(paths)) for d, paths in scan(data).items()}
    domains = sorted(vecs)
    dim = next(iter(vecs.values())).shape[1]
    graph = PrototypeGraph(domains=domains, centroids=np.zeros((0, dim)), owner=[], links=np.zeros((0, 2)),
                           radius=[], domain_means=np.stack([vecs[d].mean(0) for d in domains]))
    rule = OpenSetRule(graph, {"contrast": contrast_calibration(vecs, seed=0)})
    res = evaluate(embed, data, pairs=PAIRS[protocol], seed=seed, n_examples=0, keep_scores=False,
                   reject_fn=rule_reject_fn(rule, lambda d, q, n: top_cosines(q, vecs[d], n)))
    return _summary("floor", protocol, seed, {"eval_s": round(time.perf_counter() - t0, 1)}, res,
                    open_set_rule="contrast")


def run_job(variant: str, protocol: str, seed: int, args) -> dict:
    name = f"{variant}_{protocol}_{seed}"
    job = args.work / name
    result_file = job / "result.json"
    if args.reexport and variant != "floor":
        result_file.unlink(missing_ok=True)
        if (job / "model.uem").is_dir():
            import shutil

            shutil.rmtree(job / "model.uem")
    if result_file.is_file():
        return json.loads(result_file.read_text())
    if variant == "floor":
        out = run_floor(protocol, seed, args)
        job.mkdir(parents=True, exist_ok=True)
        result_file.write_text(json.dumps(out, indent=1))
        return out

    from uem.eval.bundle_eval import evaluate_bundle
    from uem.export.config import ExportConfig
    from uem.export.pipeline import export_run
    from uem.train.trainer import train

    data = protocol_data(args.data, args.work, protocol, seed)
    run, bundle = job / "run", job / "model.uem"
    times = {}
    if not (run / "encoder.pt").is_file():
        cfg = configure(data, variant, seed, args.set)
        feats = None
        base_cache = args.work / f"full_{protocol}_{seed}" / "run" / "trunk_cache.pt"
        if args.reuse_cache and variant != "full" and base_cache.is_file():
            import torch

            feats = torch.load(base_cache, map_location="cpu", weights_only=True)["features"]
            if not cfg.model.line_view:
                feats = feats[:, :, : feats.shape[2] // 2]  # the first view's channels (EncoderNet.trunk)
        t0 = time.perf_counter()
        train(cfg, run, trunk_features=feats, progress=False)
        times["train_s"] = round(time.perf_counter() - t0, 1)
    if not (bundle / "manifest.json").is_file():
        t0 = time.perf_counter()
        export_run(run, bundle, ExportConfig(overwrite=True), progress=False)
        times["export_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    res = evaluate_bundle(bundle, data, protocol="close", pairs=PAIRS[protocol], seed=seed, sheets=False,
                          out=job / "eval" if args.reports else None)
    times["eval_s"] = round(time.perf_counter() - t0, 1)
    manifest = json.loads((bundle / "manifest.json").read_text())
    out = _summary(variant, protocol, seed, times, res, cache_reused=bool(args.reuse_cache and variant != "full"),
                   open_set_rule=manifest["model"]["extra"].get("open_set_rule", "prototype"))
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    out["merged_last_epoch"] = next((r["merged"] for r in reversed(log) if "merged" in r), None)
    graph = json.loads((run / "prototypes.json").read_text()) if (run / "prototypes.json").is_file() else {}
    out["prototype_links"] = len(graph.get("links", [])) if isinstance(graph, dict) else None
    result_file.write_text(json.dumps(out, indent=1))
    return out


def summarise(results: list[dict]) -> str:
    """Markdown: one row per (variant, protocol, pair), mean ± std over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        for pair, m in r["pairs"].items():
            groups.setdefault((r["variant"], r["protocol"], pair), []).append(m)
    lines = ["| variant | protocol | pair | seeds | top-1 identity | mAP@All | detection | acceptance | H | AUROC |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(ms, k):
        v = [m[k] for m in ms if m.get(k) is not None]
        if not v:
            return "–"
        return f"{np.mean(v):.3f} ± {np.std(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"

    for (variant, protocol, pair), ms in sorted(groups.items(), key=lambda x: (x[0][1], x[0][2], x[0][0])):
        lines.append(f"| {variant} | {protocol} | {pair} | {len(ms)} | " + " | ".join(
            cell(ms, k) for k in ("top1_identity", "map", "private_detection", "known_acceptance", "h_score",
                                  "auroc")) + " |")
    return "\n".join(lines)


def paired(results: list[dict]) -> str:
    """Markdown: each variant against `full` on the (protocol, seed) jobs both have, averaged over those
    jobs and their pairs — ablations are compared on the same splits only."""
    by = {(r["variant"], r["protocol"], r["seed"]): r for r in results}
    lines = ["| variant | protocol | jobs (seeds) | top-1 identity (Δ vs full) | mAP@All (Δ) | H (Δ) | AUROC (Δ) |",
             "|---|---|---|---|---|---|---|"]
    for variant in sorted({r["variant"] for r in results} - {"full"}):
        for protocol in sorted({r["protocol"] for r in results}):
            seeds = sorted(sd for (v, pr, sd) in by if v == variant and pr == protocol and ("full", pr, sd) in by)
            if not seeds:
                continue
            cells = []
            for key in ("top1_identity", "map", "h_score", "auroc"):
                a = [m[key] for sd in seeds for m in by[(variant, protocol, sd)]["pairs"].values() if m.get(key) is not None]
                b = [m[key] for sd in seeds for m in by[("full", protocol, sd)]["pairs"].values() if m.get(key) is not None]
                cells.append(f"{np.mean(a):.3f} ({np.mean(a) - np.mean(b):+.3f})" if a and b else "–")
            lines.append(f"| {variant} | {protocol} | {len(seeds)} ({', '.join(map(str, seeds))}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data/emoji3"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/uem-grid"))
    ap.add_argument("--variants", default="full")
    ap.add_argument("--protocols", default="close,open")
    ap.add_argument("--seeds", default="2024")
    ap.add_argument("--set", action="append", default=[], help="extra config field=json for every job")
    ap.add_argument("--reuse-cache", action="store_true")
    ap.add_argument("--reports", action="store_true", help="also write uemctl-eval style reports per job")
    ap.add_argument("--reexport", action="store_true",
                    help="export and score trained runs again (after an export or engine change); training is kept")
    ap.add_argument("--collect", action="store_true",
                    help="run nothing: gather the finished jobs of --work (filtered by the lists above) into one table")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    if args.collect:
        want = (set(args.variants.split(",")), set(args.protocols.split(",")), {int(x) for x in args.seeds.split(",")})
        results = [r for r in (json.loads(f.read_text()) for f in sorted(args.work.glob("*/result.json")))
                   if (r["variant"] in want[0] or "all" in want[0]) and r["protocol"] in want[1] and r["seed"] in want[2]]
        if args.out:
            args.out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))
        print(summarise(results))
        print()
        print(paired(results))
        return 0
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for protocol in args.protocols.split(","):
            for variant in args.variants.split(","):
                if variant not in VARIANTS or protocol not in PAIRS:
                    raise SystemExit(f"unknown variant/protocol {variant}/{protocol}")
                t0 = time.perf_counter()
                r = run_job(variant, protocol, seed, args)
                results.append(r)
                print(f"{variant} {protocol} {seed}: " + "; ".join(
                    f"{p} top1 {m['top1_identity']:.3f} mAP {m['map']:.3f}"
                    + (f" H {m['h_score']:.3f} AUROC {m['auroc']:.3f}" if m.get("h_score") is not None else "")
                    for p, m in r["pairs"].items()) + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
                if args.out:
                    args.out.write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=1))
    print(summarise(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
