"""End-to-end `Engine.query` latency with and without alignment + CSLS re-ranking, side by side.

    python benchmarks/align_latency.py ALIGNED.uem PLAIN.uem --domain D --queries DIR [--n 200]

Both bundles must hold the same encoder and items (e.g. PLAIN made from a copy of ALIGNED with
`uemctl index realign --align none --no-maps --csls-k 0`), so the only difference is what happens
after the encoder. One onnxruntime thread, the same query images in alternating order (A, B, A,
B, ...) so drift of the machine hits both alike; p50/p90 of wall time per query, and the ratio.
Also the post-encoder part alone (query with vector= on the embedded queries), where the difference lives.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from uem.engine import Engine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("aligned", type=Path)
    ap.add_argument("plain", type=Path)
    ap.add_argument("--domain", required=True, help="target domain")
    ap.add_argument("--queries", type=Path, required=True, help="folder of query images (searched recursively)")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    paths = sorted(p for p in args.queries.rglob("*.png"))[:: max(1, len(sorted(args.queries.rglob("*.png"))) // args.n)][: args.n]
    engines = {"aligned": Engine.open(args.aligned, threads=1), "plain": Engine.open(args.plain, threads=1)}
    for eng in engines.values():  # warm-up
        eng.query(paths[0], args.domain, k=args.k)
    wall = {name: [] for name in engines}
    post = {name: [] for name in engines}
    vecs = engines["plain"].embed(paths)
    for i, p in enumerate(paths):
        for name, eng in (engines.items() if i % 2 == 0 else reversed(list(engines.items()))):
            t = time.perf_counter()
            eng.query(p, args.domain, k=args.k)
            wall[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            eng.query(vector=vecs[i], domain=args.domain, k=args.k)
            post[name].append(time.perf_counter() - t)
    res = {}
    for name in engines:
        w, q = np.array(wall[name]) * 1e3, np.array(post[name]) * 1e3
        res[name] = {"query_p50_ms": round(float(np.median(w)), 3), "query_p90_ms": round(float(np.percentile(w, 90)), 3),
                     "after_encoder_p50_ms": round(float(np.median(q)), 3)}
    res["ratio_p50"] = round(res["aligned"]["query_p50_ms"] / res["plain"]["query_p50_ms"], 3)
    res["ratio_after_encoder_p50"] = round(res["aligned"]["after_encoder_p50_ms"] / res["plain"]["after_encoder_p50_ms"], 3)
    res["queries"] = len(paths)
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
