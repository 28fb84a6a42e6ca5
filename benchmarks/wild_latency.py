#!/usr/bin/env python
"""What content framing costs a query: Engine.query p50 of bundles side by side, one thread.

    .venv/bin/python benchmarks/wild_latency.py --bundle content=out/.../default-s0/model.uem \\
        --bundle letterbox=out/.../letterbox-s0/model.uem --clean data/emoji3/twemoji \\
        --wild out/.../default-s0/eval/wild/v1-seed0/background/twemoji --target notomono

Each bundle answers the same pictures (as indexed, and wild copies: JPEG photos of the icon on a
backdrop) with `Engine.query(..., source=<domain>)` on one onnxruntime thread; rounds interleave
the bundles so a busy machine slows them alike. Prints p50 / p90 in ms per bundle and picture kind.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from uem.engine import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", action="append", required=True, help="NAME=PATH")
    ap.add_argument("--clean", type=Path, required=True, help="folder of indexed pictures (the source domain)")
    ap.add_argument("--wild", type=Path, required=True, help="folder of wild copies of them")
    ap.add_argument("--target", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    source = args.clean.name
    pictures = {"clean": sorted(args.clean.rglob("*.png"))[: args.n], "wild": sorted(args.wild.rglob("*.jpg"))[: args.n]}
    engines = {name: Engine.open(path, threads=1) for name, path in (b.split("=", 1) for b in args.bundle)}
    times = {(e, k): [] for e in engines for k in pictures}
    for r in range(args.rounds + 1):                      # round 0 warms up
        for kind, pics in pictures.items():
            for p in pics:
                for name, eng in engines.items():
                    t0 = time.perf_counter()
                    eng.query(p, domain=args.target, k=10, source=source)
                    if r:
                        times[name, kind].append((time.perf_counter() - t0) * 1e3)
    for (name, kind), t in times.items():
        print(f"{name:12s} {kind:6s} p50 {np.median(t):6.2f} ms  p90 {np.percentile(t, 90):6.2f} ms  (n {len(t)})")


if __name__ == "__main__":
    main()
