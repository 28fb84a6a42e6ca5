#!/usr/bin/env python
"""Score training runs on emoji3 with their torch encoder (labels only through uem.eval).

    # train (time + peak RSS), then score against the floor of docs/benchmarks.md:
    /usr/bin/time -v .venv/bin/uemctl train data/emoji3 -o runs/default
    .venv/bin/python benchmarks/train_emoji3.py runs/default [more runs...] --data data/emoji3

Per run and ordered pair (close-set): top-1 identity and subgroup mAP@All, next to the floor
(uem.train.floor.REFERENCE = docs/benchmarks.md's table) and the ratio to it. `--imagenet-size S` also
scores the untrained ImageNet pooled features at S px (what the trainer starts from at that size).
Writes benchmarks/results/train_<run name>.json (the full harness result per run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from uem.train.floor import REFERENCE, floor_embed_fn

HERE = Path(__file__).resolve().parent


def encoder_embed_fn(run: Path, batch_size: int = 64):
    """paths -> float32 [N, D] with the run's trained encoder (eval mode, CPU, no grad)."""
    import torch

    from uem.engine.preprocess import preprocess_batch
    from uem.train.run import load_encoder

    encoder, cfg = load_encoder(run)
    spec = cfg.model.preprocess()

    def embed(paths):
        out = []
        with torch.no_grad():
            for i in range(0, len(paths), batch_size):
                out.append(encoder(torch.from_numpy(preprocess_batch(paths[i:i + batch_size], spec))).numpy())
        return np.concatenate(out).astype(np.float32)

    return embed


def trunk_cache_embed_fn(run: Path, batch_size: int = 256):
    """Fast development variant: the run's cached trunk output of the clean images (view 0 of
    RUN/trunk_cache.pt, kept with --keep-cache) through the trained top. Differs from the real
    encoder only by the float16 rounding of the cache; final numbers use `encoder_embed_fn`."""
    import torch

    from uem.datasets.folders import scan
    from uem.train.trunk_cache import CACHE
    from uem.train.run import load_encoder

    encoder, cfg = load_encoder(run)
    feats = torch.load(run / CACHE, map_location="cpu", weights_only=True)["features"][0]
    files = scan(cfg.data, cfg.domains)
    row = {p.resolve(): i for i, p in enumerate(p for d in cfg.domains for p in files[d])}

    def embed(paths):
        idx = torch.as_tensor([row[Path(p).resolve()] for p in paths])
        with torch.no_grad():
            return torch.cat([encoder.top(feats[idx[i:i + batch_size]].float())
                              for i in range(0, len(idx), batch_size)]).numpy()

    return embed


def retrain(base: Path, out: Path, settings: list[str]) -> Path:
    """Experiments: train again on the trunk cache of `base` (same images, input size, freeze point
    and views) with some config fields changed (`--set epochs_idse=6 --set lr=0.05 ...`), keeping the
    cache so `--from-cache` can score it. Only the training part is timed."""
    import torch

    from uem.train.trunk_cache import CACHE
    from uem.train.run import load_config
    from uem.train.trainer import train

    cfg = load_config(base)
    changes = {"keep_cache": True}
    for item in settings:
        key, value = item.split("=", 1)
        if hasattr(cfg.model, key) and not hasattr(cfg, key):
            key, old = f"model.{key}", getattr(cfg.model, key)
        else:
            old = getattr(cfg, key, None)
        changes[key] = (None if value == "None" else type(old)(json.loads(value)) if old is not None
                        else json.loads(value))
    feats = torch.load(base / CACHE, map_location="cpu", weights_only=True)["features"]
    cfg = cfg.with_changes({**changes, "views": feats.shape[0] - 1})
    base_blocks = load_config(base).model.freeze_blocks
    if cfg.model.freeze_blocks > base_blocks:  # run the newly frozen blocks over the old cache
        from uem.train.trunk_cache import advance
        from uem.train.model import build_encoder

        feats = advance(build_encoder(cfg.model, pretrained=True), feats, base_blocks)
    elif cfg.model.freeze_blocks < base_blocks:
        raise SystemExit("--retrain can only freeze more blocks than the base run, not fewer")
    t0 = time.perf_counter()
    train(cfg, out, trunk_features=feats)
    print(f"retrain {out.name}: {time.perf_counter() - t0:.0f} s (training only, cache reused)", flush=True)
    return out


def score(name: str, embed_fn, data: Path, protocol: str, seed: int) -> dict:
    from uem.eval.harness import evaluate

    t0 = time.perf_counter()
    res = evaluate(embed_fn, data, protocol=protocol, seed=seed, n_examples=0, keep_scores=False,
                   log=lambda s: print(f"  [{name}] {s}", file=sys.stderr, flush=True))
    res["seconds_total"] = round(time.perf_counter() - t0, 1)
    return res


def table(name: str, res: dict) -> str:
    lines = [f"{name}", "| pair | top-1 identity | x floor | subgroup mAP@All | x floor |",
             "|---|---|---|---|---|"]
    ratios = []
    for p in res["pairs"]:
        ref = REFERENCE.get(p["pair"])
        t1, m = p["top1_identity"], p["map"]
        r1 = t1 / ref["top1_identity"] if ref else float("nan")
        rm = m / ref["map"] if ref else float("nan")
        ratios += [r1, rm]
        lines.append(f"| {p['pair']} | {t1:.3f} | {r1:.2f} | {m:.3f} | {rm:.2f} |")
    lines.append(f"min ratio to floor: {np.nanmin(ratios):.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path)
    ap.add_argument("--data", type=Path, default=Path("data/emoji3"))
    ap.add_argument("--protocol", default="close")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--imagenet-size", type=int, default=None)
    ap.add_argument("--from-cache", action="store_true", help="embed from RUN/trunk_cache.pt (fast, dev only)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--retrain", type=Path, default=None, metavar="NEW_RUN",
                    help="first train NEW_RUN on the cache of the (single) run given, with --set changes")
    ap.add_argument("--set", action="append", default=[], help="config field=value for --retrain")
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.retrain:
        (base,) = args.runs
        args.runs = [retrain(base, args.retrain, args.set)]
    make = trunk_cache_embed_fn if args.from_cache else encoder_embed_fn
    jobs = [(run.name, make(run)) for run in args.runs]
    if args.imagenet_size:
        jobs.append((f"imagenet{args.imagenet_size}", floor_embed_fn(size=args.imagenet_size, framing="letterbox")))
    for name, fn in jobs:
        res = score(name, fn, args.data, args.protocol, args.seed)
        (args.out_dir / f"train_{name}.json").write_text(json.dumps(res, indent=1), encoding="utf-8")
        print(table(f"{name} ({args.protocol}, {res['seconds_total']} s)", res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
