"""Export a run and measure what the bundle's int8 encoder costs and buys (benchmarks/RESULTS-archive.md,
"Export parity and int8").

    .venv/bin/python benchmarks/export_bench.py RUN [-o OUT.uem] [--calib 300] [--iters 500]

Runs the real export (`export_run`, as `uemctl export RUN -o OUT --keep-fp32` does), prints its parity
report, the export wall time and the file sizes, then times the bundle's int8 encoder, its fp32
encoder (onnxruntime) and torch eager at batch 1 on one thread — interleaved in one loop, so the
ratios are measured side by side even on a shared machine. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from uem.export.config import ExportConfig
from uem.export.pipeline import export_run
from uem.engine.encoder import open_session
from uem.train.run import load_encoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("-o", "--out", type=Path, default=None)
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--iters", type=int, default=500)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="uem-bench-")) / "model.uem"

    t0 = time.perf_counter()
    s = export_run(args.run, out, ExportConfig(calib=args.calib, keep_fp32=True))
    wall = time.perf_counter() - t0
    m = json.loads((out / "manifest.json").read_text())
    files = {k: v["size"] for k, v in m["files"].items()}
    int8, fp32 = out / m["files"]["encoder.onnx"]["path"], out / m["files"]["encoder.fp32.onnx"]["path"]

    encoder, cfg = load_encoder(args.run)
    torch.set_num_threads(1)
    size = cfg.model.input_size
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    tx = torch.from_numpy(x)
    s8, s32 = open_session(int8, threads=1), open_session(fp32, threads=1)
    name = s8.get_inputs()[0].name

    def torch_fn():
        with torch.no_grad():
            encoder(tx)

    fns = {"onnxruntime int8": lambda: s8.run(None, {name: x}), "onnxruntime fp32": lambda: s32.run(None, {name: x}),
           "torch eager fp32": torch_fn}
    for fn in fns.values():
        for _ in range(20):
            fn()
    ms = {k: np.empty(args.iters) for k in fns}
    for i in range(args.iters):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            ms[k][i] = (time.perf_counter() - t) * 1e3
    p50 = {k: float(np.median(v)) for k, v in ms.items()}
    p99 = {k: float(np.percentile(v, 99)) for k, v in ms.items()}

    p = s.parity
    print(f"export of {args.run} -> {out}: {wall:.0f} s wall ({', '.join(f'{d} {n}' for d, n in s.domains.items())} images)")
    print(f"quantization: {s.quantization['label']}, {s.quantization['calibration_images']} calibration images\n")
    print("| parity (held-out images, int8 vs fp32 unless noted) | value |\n|---|---|")
    print(f"| images compared | {p.images} |")
    print(f"| cosine int8 vs onnx fp32: mean / min | {p.int8_vs_fp32.cos_mean:.4f} / {p.int8_vs_fp32.cos_min:.4f} |")
    print(f"| cosine int8 vs torch: mean / min | {p.int8_vs_torch.cos_mean:.4f} / {p.int8_vs_torch.cos_min:.4f} |")
    print(f"| cosine onnx fp32 vs torch: mean / min | {p.onnx_vs_torch.cos_mean:.6f} / {p.onnx_vs_torch.cos_min:.6f} |")
    print(f"| top-10 overlap (cross-domain, against every exported vector) | {p.top10_overlap:.3f} |\n")
    print(f"| encoder, batch 1, 1 thread ({args.iters} interleaved runs) | p50 ms | p99 ms | speed-up of int8 |")
    print("|---|---|---|---|")
    for k in fns:
        print(f"| {k} | {p50[k]:.2f} | {p99[k]:.2f} | {p50[k] / p50['onnxruntime int8']:.2f}x |")
    print("\n| file | bytes |\n|---|---|")
    print(f"| encoder.onnx (int8) | {os.path.getsize(int8):,} |")
    print(f"| encoder.fp32.onnx | {os.path.getsize(fp32):,} |")
    print(f"| whole bundle (with fp32) | {sum(files.values()):,} |")


if __name__ == "__main__":
    main()
