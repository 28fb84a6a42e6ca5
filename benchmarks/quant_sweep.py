"""Sweep int8 quantization recipes for the encoder: accuracy vs fp32 and batch-1 one-thread latency.

    .venv/bin/python benchmarks/quant_sweep.py RUN [--data DIR] [--calib 300] [--iters 300] [--only KEY ...]

Accuracy: every image of every domain is embedded by the fp32 ONNX model and by each int8 model;
cosine (mean / min) over the images not used for calibration; top-10 overlap = for held-out queries
of each domain, the share of their 10 nearest neighbours among ALL vectors of every other domain
that int8 and fp32 agree on (what the bundle's indexes would return).
Latency: batch 1, one thread; every model (and onnxruntime fp32 and torch eager) is timed in ONE
interleaved loop at the end, so machine noise hits all of them alike. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from uem.datasets.folders import scan
from uem.engine.preprocess import preprocess_batch
from uem.export.onnx import compare, export_onnx
from uem.export.parity import cross_domain_overlap
from uem.export.quantize import DEFAULT, QuantConfig, calibration_sample, quantize_int8
from uem.engine.encoder import Encoder, open_session
from uem.train.run import load_encoder

Q = QuantConfig
RECIPES = {
    # the stock quantizer, as the onnxruntime docs suggest (U8S8, per-channel, MinMax)
    "qdq": Q(format="qdq"),
    "qop": Q(format="qoperator"),
    "qop-per-tensor": Q(per_channel=False),
    "qop-reduce-range": Q(reduce_range=True),
    "qdq-s8s8": Q(format="qdq", activation="s8"),
    "qop-s8s8": Q(activation="s8"),
    "qop-u8u8": Q(weight="u8"),
    "qop-entropy": Q(method="entropy"),
    "qop-percentile": Q(method="percentile"),
    "qop-head-fp32": Q(keep_fp32=("Gemm",)),
    # what fixes accuracy on icons: fp32 stem, bias correction (see uem/export/biascorrect.py)
    "qop-stem-fp32": Q(fp32_convs=1),
    "qop-bc": Q(bias_correction=True),
    "qop-stem-fp32-bc": Q(fp32_convs=1, bias_correction=True),
    "qop-3conv-fp32-bc": Q(fp32_convs=3, bias_correction=True),
    "qop-3conv-fp32-bc-per-tensor": Q(fp32_convs=3, bias_correction=True, per_channel=False),
    "qop-3conv-fp32-bc-u8u8": Q(fp32_convs=3, bias_correction=True, weight="u8"),
    "qdq-3conv-fp32-bc": Q(format="qdq", fp32_convs=3, bias_correction=True),
    "qop-3conv-fp32-bc-pct": Q(fp32_convs=3, bias_correction=True, method="percentile"),
    "qop-6conv-fp32-bc": Q(fp32_convs=6, bias_correction=True),
    # linear projection head (centred output): the end of the network in fp32 too
    "default-gemm-fp32": Q(fp32_convs=3, bias_correction=True, method="percentile", keep_fp32=("Gemm",)),
    "default-tail1-fp32": Q(fp32_convs=3, bias_correction=True, method="percentile", fp32_tail_convs=1),
    "default-tail4-fp32": Q(fp32_convs=3, bias_correction=True, method="percentile", fp32_tail_convs=4),
    "default-tail7-fp32": Q(fp32_convs=3, bias_correction=True, method="percentile", fp32_tail_convs=7),
    "6conv-fp32-bc-pct": Q(fp32_convs=6, bias_correction=True, method="percentile"),
    "12conv-fp32-bc-pct": Q(fp32_convs=12, bias_correction=True, method="percentile"),
    "3conv-fp32-bc-minmax": Q(fp32_convs=3, bias_correction=True),
    # CPUs without VNNI: u8s8 products can saturate int16 in the AVX2 kernels; 7-bit weights avoid it
    "3conv-fp32-bc-minmax-rr": Q(fp32_convs=3, bias_correction=True, reduce_range=True),
    "3conv-fp32-bc-pct-rr": Q(fp32_convs=3, bias_correction=True, method="percentile", reduce_range=True),
    "3conv-fp32-bc-minmax-s8s8": Q(fp32_convs=3, bias_correction=True, activation="s8"),
}


def interleaved_ms(fns: dict, iters: int, warmup: int = 10) -> dict[str, np.ndarray]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {k: np.empty(iters) for k in fns}
    for i in range(iters):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[k][i] = (time.perf_counter() - t) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, default=None, help="default: the run's training data")
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--queries", type=int, default=200, help="held-out queries per domain")
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    encoder, cfg = load_encoder(args.run)
    spec = cfg.model.preprocess()
    domains = scan(args.data or cfg.data, cfg.domains or None)
    calib_paths = calibration_sample(domains, args.calib, seed=args.seed)
    used = set(calib_paths)
    calib = preprocess_batch(calib_paths, spec)
    rng = np.random.default_rng(args.seed + 1)
    x = {d: preprocess_batch(files, spec) for d, files in domains.items()}
    held = {d: np.array([i for i, f in enumerate(files) if f not in used]) for d, files in domains.items()}
    held = {d: np.sort(rng.choice(h, min(args.queries, len(h)), replace=False)) for d, h in held.items()}
    not_calib = {d: np.array([i for i, f in enumerate(files) if f not in used]) for d, files in domains.items()}

    tmp = Path(tempfile.mkdtemp(prefix="uem-sweep-"))
    fp32 = export_onnx(encoder, tmp / "fp32.onnx", spec.size)
    ref = {d: Encoder(fp32).embed(v) for d, v in x.items()}
    cat = lambda v, idx: np.concatenate([v[d][idx[d]] for d in sorted(v)])  # noqa: E731

    rows = {}
    sessions = {}
    for key, qc in RECIPES.items():
        if args.only and key not in args.only:
            continue
        t0 = time.time()
        path = quantize_int8(fp32, tmp / f"{key}.onnx", calib, qc)
        qt = time.time() - t0
        q = {d: Encoder(path).embed(v) for d, v in x.items()}
        c = compare(cat(q, not_calib), cat(ref, not_calib))
        ov = cross_domain_overlap({d: ref[d][held[d]] for d in ref}, {d: q[d][held[d]] for d in q}, 10, ref, q)
        rows[key] = dict(label=qc.label(), cos_mean=c.cos_mean, cos_min=c.cos_min, overlap=ov,
                         mb=os.path.getsize(path) / 1e6, quant_s=qt)
        sessions[key] = open_session(path, threads=1)
        print(f"{key}: cos {c.cos_mean:.4f} min {c.cos_min:.4f} top-10 {ov:.3f} ({qt:.0f} s)", file=sys.stderr, flush=True)

    torch.set_num_threads(1)
    one = x[sorted(x)[0]][:1].copy()
    tone = torch.from_numpy(one)
    s32 = open_session(fp32, threads=1)
    name = s32.get_inputs()[0].name

    def torch_fn():
        with torch.no_grad():
            encoder(tone)

    fns = {"fp32": lambda: s32.run(None, {name: one}), "torch": torch_fn}
    fns.update({k: (lambda s=s: s.run(None, {name: one})) for k, s in sessions.items()})
    ms = interleaved_ms(fns, args.iters)
    med = {k: float(np.median(v)) for k, v in ms.items()}

    n_img = sum(len(v) for v in x.values())
    print(f"\n{args.run} on {args.data or cfg.data}: {n_img} images in {len(x)} domains; calibration "
          f"{len(calib)} images (seed {args.seed}); cosine over the {sum(len(v) for v in not_calib.values())} "
          f"others; top-10 overlap for {sum(len(v) for v in held.values())} held-out queries against every "
          f"vector of each other domain. Latency: batch 1, 1 thread, median of {args.iters} interleaved runs: "
          f"onnxruntime fp32 {med['fp32']:.2f} ms, torch eager {med['torch']:.2f} ms. "
          f"fp32 model {os.path.getsize(fp32) / 1e6:.1f} MB.\n")
    print("| recipe | cos mean | cos min | top-10 overlap | int8 p50 ms | fp32/int8 | torch/int8 | MB |")
    print("|---|---|---|---|---|---|---|---|")
    for key, r in rows.items():
        chosen = " **(default)**" if RECIPES[key] == DEFAULT else ""
        print(f"| `{key}`{chosen}: {r['label']} | {r['cos_mean']:.4f} | {r['cos_min']:.4f} | {r['overlap']:.3f} | "
              f"{med[key]:.2f} | {med['fp32'] / med[key]:.2f}x | {med['torch'] / med[key]:.2f}x | {r['mb']:.1f} |")


if __name__ == "__main__":
    main()
