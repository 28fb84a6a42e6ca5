#!/usr/bin/env python
"""The "no match" rules through the int8 bundle on close-set and open-set splits, side by side.

For each situation a bundle is built exactly as an export of that data would build it, except that
the int8 encoder and the stored vectors are taken from one bundle exported on the whole data set:
  close      every domain keeps every concept (all ordered pairs);
  open/SEED  the target domain keeps a seeded half of its concepts (`uem.demo.make_open_set_copy`,
             the split `uemctl demo` and `benchmarks/ablation_grid.py` use); pairs: each other
             domain -> target. Seed 0 is `uemctl demo`'s split.
The split's alignment, prototypes and open-set calibration are fitted on the kept vectors only
(`uem.export.fit.fit_from_vectors`, label-free, as export does) and written with `write_bundle`;
the bundle is then scored by `uem.eval.evaluate` with the engine's own `reject_fn` and
`pair_scores` (`uem.eval.engine_scores`, what `uemctl eval` runs). Embedding: the stored int8
vectors of the same images (checked against `Engine.embed` on a sample, printed), so no image is embedded twice.

    .venv/bin/python benchmarks/openset_splits.py BUNDLE DATA --target notomono --seeds 2024,2025,2026,0 \
        --work /tmp/os --out benchmarks/results/openset_splits_emoji3.json [--queries wild] [--rules anchored]

`--queries wild` scores every situation again with wild copies of the queries (uem.eval.wild),
embedded once by the bundle's engine; the split's calibration keeps the bundle's wild probes of
its kept items (export/probes.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from uem.demo import make_open_set_copy
from uem.engine import Engine
from uem.engine.bundle import DomainData, read_bundle, write_bundle
from uem.eval.engine_scores import pair_scores, reject_fn
from uem.eval.harness import evaluate, wild_blocks
from uem.eval.labels import load_labels
from uem.export.config import ExportConfig
from uem.export.fit import fit_from_vectors
from uem.export.realign import recorded_config

RULES = ("anchored", "contrast")


def _f(x) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def split_bundle(info, stored: dict[str, np.ndarray], keep: dict[str, np.ndarray], out: Path, rule: str) -> Path:
    """A bundle of the kept items of `info` (`stored`: its vectors), its read-out fitted on them
    alone with the bundle's own alignment settings and the export defaults otherwise (a bundle
    without training: merge on, prototype seed 0)."""
    cfg = ExportConfig(open_set=rule)
    vectors = {d: stored[d][keep[d]] for d in info.domains}
    items = {d: [it for it, k in zip(info.domains[d].items, keep[d]) if k] for d in info.domains}
    probes, probe_rows = {}, {}
    for d, rows in info.alignment.probe_rows.items():   # the kept items' probes, renumbered
        new_row = np.cumsum(keep[d]) - 1
        mine = keep[d][rows]
        if mine.any():
            probes[d], probe_rows[d] = info.alignment.probes[d][mine], new_row[rows[mine]]
    alignment, align_log, graph, calibration = fit_from_vectors(
        vectors, recorded_config(info), merge_rule=cfg.merge_rule, open_set=rule, merge=True,
        k_prototypes=None, proto_seed=0, seed=0, probes=probes, probe_rows=probe_rows)
    extra = {**info.extra, "alignment": align_log, "open_set_rule": rule, "merge_rule": cfg.merge_rule}
    if out.exists():
        shutil.rmtree(out)
    write_bundle(out, encoder_onnx=info.encoder.path, encoder_fp32_onnx=None, preprocess=info.preprocess,
                 embed_dim=info.embed_dim, domains=[DomainData(d, vectors[d], items[d]) for d in info.domains],
                 prototypes=graph, hnsw=info.hnsw, calibration=calibration, extra=extra, alignment=alignment)
    return out


def stored_embedder(info, stored: dict[str, np.ndarray], engine: Engine | None = None):
    """embed_fn that returns the bundle's stored int8 vectors of the given image paths; any other
    picture (a wild copy) is embedded once by `engine` and remembered."""
    table = {}
    for d in info.domains:
        for it, row in zip(info.domains[d].items, stored[d]):
            table[str(Path(it["path"]).resolve())] = row

    def embed(paths):
        keys = [str(Path(p).resolve()) for p in paths]
        new = [k for k in dict.fromkeys(keys) if k not in table]
        if new:
            if engine is None:
                raise KeyError(f"{new[0]} is not in the bundle")
            for k, v in zip(new, engine.embed(new)):
                table[k] = v
        return np.stack([table[k] for k in keys])
    return embed


def breakdown(accepted: np.ndarray, qcats: np.ndarray, private: np.ndarray, kept: set[str], n: int = 8) -> dict:
    """The categories answered worst: private ones least rejected (with whether a sibling, a
    category of the same group before the first '-', stays in the target) and shared ones least
    accepted."""
    out = {"private": [], "shared": []}
    for c in np.unique(qcats):
        m = qcats == c
        if private[m].all():
            group = c.split("-")[0]
            sib = sorted(k for k in kept if k != c and k.split("-")[0] == group)
            out["private"].append({"category": c, "rejected": round(float((~accepted[m]).mean()), 3),
                                   "n": int(m.sum()), "siblings_in_target": sib[:4]})
        else:
            out["shared"].append({"category": c, "accepted": round(float(accepted[m].mean()), 3), "n": int(m.sum())})
    out["private"] = sorted(out["private"], key=lambda r: r["rejected"])[:n]
    out["shared"] = sorted(out["shared"], key=lambda r: r["accepted"])[:n]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--target", required=True)
    ap.add_argument("--seeds", default="2024,2025,2026")
    ap.add_argument("--work", type=Path, default=Path("/tmp/uem-openset-splits"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--check", type=int, default=24, help="images re-embedded by the engine to check the stored vectors")
    ap.add_argument("--queries", choices=("clean", "wild"), default="clean")
    ap.add_argument("--rules", default=",".join(RULES))
    args = ap.parse_args()
    unknown = set(args.rules.split(",")) - set(RULES)
    if unknown:
        ap.error(f"--rules: unknown {', '.join(sorted(unknown))} (known: {', '.join(RULES)})")
    info = read_bundle(args.bundle)
    stored = {d: info.load_vectors(d, mmap=False) for d in info.domains}
    encoder = Engine.open(args.bundle)
    embed = stored_embedder(info, stored, encoder)
    labels = load_labels(args.data)
    # the stored vectors are what the engine computes
    paths = [p for d in info.domains for p in labels[d].paths[: args.check // len(info.domains)]]
    diff = float(np.abs(encoder.embed(paths) - embed(paths)).max())
    print(f"stored vs Engine.embed on {len(paths)} images: max |diff| {diff:.2e}", flush=True)
    situations = [("close", None)] + [(f"open/{s}", int(s)) for s in args.seeds.split(",")]
    report = {"bundle": str(args.bundle), "data": str(args.data), "target": args.target,
              "embed_check_max_abs_diff": diff, "rows": []}
    for name, seed in situations:
        data = args.data if seed is None else Path(make_open_set_copy(args.data, args.work / f"data_{seed}",
                                                                      args.target, seed)["path"])
        split_labels = load_labels(data)
        kept_ids = {d: {Path(p).relative_to(data / d).as_posix() for p in map(str, split_labels[d].paths)}
                    for d in info.domains}
        keep = {d: np.array([it["id"] in kept_ids[d] for it in info.domains[d].items]) for d in info.domains}
        pairs = ([f"{s}->{args.target}" for s in info.domains if s != args.target] if seed is not None else None)
        for rule in args.rules.split(","):
            t0 = time.perf_counter()
            b = split_bundle(info, stored, keep, args.work / f"{name.replace('/', '_')}_{rule}.uem", rule)
            with Engine.open(b) as eng:
                reject, decided = reject_fn(eng), {}

                def recorded(qv, qd, td, tv):  # the engine's decisions, kept for the per-category breakdown
                    accepted, score = reject(qv, qd, td, tv)
                    decided.setdefault((qd, td), []).append(accepted)  # clean first, then wild
                    return accepted, score

                res = evaluate(embed, data, pairs=pairs, reject_fn=recorded, score_fn=partial(pair_scores, eng),
                               n_examples=0, queries=args.queries, wild_dir=args.work / "wild")
                seconds = round(time.perf_counter() - t0, 1)
                views = [("clean", res["pairs"])] + [(v, b["pairs"]) for v, b in wild_blocks(res).items()]
                for view, p in ((v, p) for v, ps in views for p in ps):
                    os_ = p["open_set"]
                    row = {"situation": name, "rule": rule, "queries": view, "pair": p["pair"],
                           "top1_identity": p["top1_identity"],
                           "map": p["map"], **{k: os_[k] for k in ("private_detection", "known_acceptance",
                                                                  "h_score", "auroc", "n_private", "n_shared")}}
                    q, t = p["query"], p["target"]
                    if view == "clean":
                        accepted = decided[q, t][0]  # query rows in split_labels[q]'s order (close protocol)
                        qcats = np.asarray(split_labels[q].categories).astype(str)
                        private = np.asarray(os_["private"], bool)
                        row["worst"] = breakdown(accepted, qcats, private, set(map(str, split_labels[t].categories)))
                    row["seconds_rule"] = seconds   # bundle build + evaluation of every pair, this rule
                    report["rows"].append(row)
                    print(f"{name:10s} {rule:9s} {view:10s} {p['pair']:22s} top1 {p['top1_identity']:.3f} "
                          f"det {_f(os_['private_detection'])} acc {_f(os_['known_acceptance'])} "
                          f"H {_f(os_['h_score'])} AUROC {_f(os_['auroc'])}", flush=True)
    encoder.close()
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    sys.exit(main())
