#!/usr/bin/env python
"""Markdown tables of `uemctl bench` reports side by side (what RESULTS.md "Performance" shows).

    .venv/bin/python benchmarks/perf_tables.py NAME=REPORT.json [NAME=REPORT.json ...]

One row per report: the query end to end next to its int8 encoder alone and the plain fp32 network
timed in the same rounds, the stages, and the footprint at the grown size; then the encoder
columns of the first report that has them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from uem.perf.measure import vectors_and_links


def _f(x, fmt=".2f", none="-"):
    return none if x is None else format(x, fmt)


def main() -> None:
    reports = []
    for arg in sys.argv[1:]:
        name, _, path = arg.partition("=")
        reports.append((name, json.loads(Path(path).read_text())))
    print("| bundle | query p50 ms | int8 encoder alone | plain fp32 network | query / encoder | query / plain | "
          "decode | frame | resize | normalise | encode | search + decide |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in reports:
        q, vs = r["query"], r["query"].get("versus", {})
        st = {k: v["p50_ms"] for k, v in q["stages"].items()}
        print(f"| {name} | {q['end_to_end']['p50_ms']:.2f} | {_f(vs.get('encoder_alone_p50_ms'))} | "
              f"{_f(vs.get('reference_p50_ms'))} | {_f(vs.get('end_to_end_vs_encoder'))}x | "
              f"{_f(vs.get('end_to_end_vs_reference'))}x | " + " | ".join(
                  f"{st[s]:.2f}" for s in ("decode", "frame", "resize", "normalise", "encode", "search + reject")) + " |")
    print()
    print("| bundle | dim | items | Engine.open s (CPU s) | RSS after query MB | RSS per added item B | "
          "x (4 dim + links) | index.bin MB | vectors.npy MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in reports:
        fp = r["footprint"]
        g = fp.get("grown") or fp["as_is"]
        files = g.get("file_bytes", {})
        dim = fp.get("embed_dim")
        if dim is None and fp.get("vectors_and_links_bytes"):  # reports before the width was recorded
            dim = (fp["vectors_and_links_bytes"] - vectors_and_links(0, fp.get("hnsw_M", 32))) // 4
        print(f"| {name} | {_f(dim, 'd')} | {g['items']:,} | {g['open_s']:.3f} ({g['open_cpu_s']:.3f}) | "
              f"{g['rss_after_query_mb']:.0f} | {_f(fp.get('rss_per_added_item_bytes'), '.0f')} | "
              f"{_f(fp.get('rss_per_item_vs_vectors_and_links'))} | {_f(files.get('index.bin', 0) / 1e6, '.1f')} | "
              f"{_f(files.get('vectors.npy', 0) / 1e6, '.1f')} |")
    for name, r in reports:
        cols = r["encoder"]["columns"]
        if not cols.get("onnxruntime fp32", {}).get("available"):
            continue
        print(f"\nEncoder of {name} (batch 1 on one thread: p50 / p99 ms, interleaved; batch 32 on all threads):\n")
        print("| encoder | file MB | b1 p50 / p99 ms | b1 CPU p50 ms | int8 speed-up | b32 img/s |")
        print("|---|---|---|---|---|---|")
        sp = r["encoder"]["int8_speedup_batch1"]
        for cname, c in cols.items():
            if not c.get("available"):
                continue
            b1 = c["batch1_1thread"]
            print(f"| {cname} | {c['file_bytes'] / 1e6:.2f} | {b1['p50_ms']:.2f} / {b1['p99_ms']:.2f} | "
                  f"{c['batch1_1thread_cpu']['p50_ms']:.2f} | {_f(sp.get('vs ' + cname), '.2f', '1.00')}x | "
                  f"{c['batch32_all_threads']['images_per_s']:.0f} |")
        par = r["encoder"]["parity"]
        print(f"\nint8 vs fp32 on {par['images']} images: cosine mean {par['cos_mean']:.4f} (min "
              f"{par['cos_min']:.4f}), top-10 overlap {par['top10_overlap']:.3f}.")
        break


if __name__ == "__main__":
    main()
