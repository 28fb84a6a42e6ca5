"""Item 2 of `uemctl bench`: one query through `Engine.query` end to end, and where its time goes.

Each round times the real `Engine.query(path)` on one thread, then the same image through the same
steps one by one (decode, letter-box resize, normalise, encode, HNSW search + open-set decision,
and the decision alone), so the breakdown and the end-to-end numbers see the same load. Every
number is taken twice: wall clock, and the thread's CPU time (what the query costs whatever else
runs on the machine — on a shared machine the wall clock also counts time spent preempted). Queries are
the bundle's own items of one domain, searched in another (the product's cross-domain case).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..engine import Engine
from ..engine.bundle import BundleInfo
from ..engine.preprocess import decoded, fit_square, framed, normalize
from .encoder import OnnxModel
from .images import sample_items
from .measure import summary

REFERENCE_NOTE = ("the plain ImageNet EfficientNet-Lite0, whole network, fp32 onnxruntime, one thread, "
                  "the bundle's input size (uem.export.reference)")
STAGES = ("decode", "frame", "resize", "normalise", "encode", "search + reject", "reject only")
STAGE_NOTES = {
    "decode": "open + decode + EXIF + RGB on white (preprocess.decoded)",
    "frame": "crop to the content, backdrop to white (preprocess.framed; bundles with framing 'content')",
    "resize": "letter-box to the input size (fit_square)",
    "normalise": "uint8 -> float32 CHW, mean/std",
    "encode": "onnxruntime int8, batch 1",
    "search + reject": "Engine.query_batch(vectors=): HNSW top-k + open-set decision + hits (always built)",
    "reject only": "Snapshot.decisions: the open-set decision alone, with its own neighbour searches "
                   "(part of the line above)",
}


def _pick(info: BundleInfo, n: int, seed: int) -> tuple[str, str, list[Path]]:
    """(source, target, images): the first domain whose images exist, searched in another one."""
    names = list(info.domains)
    for src in names:
        picked = sample_items(info, n, seed=seed, domains=[src])
        if picked:
            others = [d for d in names if d != src]
            return src, (others[0] if others else src), [p for _, p in picked]
    return names[0], names[0], []


def bench_query(bundle: Path, info: BundleInfo, *, rounds: int = 300, distinct: int = 100, k: int = 10,
                seed: int = 0, reference: Path | None = None,
                note: Callable[[str], None] = lambda _m: None) -> dict:
    """The end-to-end section of the bench report (JSON-ready). `reference`: an ONNX model (the
    plain network, uem.export.reference) run on the same pixels in every round, one thread, so
    the query's cost is compared with it side by side."""
    src, target, images = _pick(info, distinct, seed)
    if not images:
        return {"note": "skipped: the bundle's source images were not found"}
    note(f"query: {rounds} rounds, {len(images)} {src} images searched in {target}, one thread")
    eng = Engine.open(bundle, threads=1)
    snap = eng.snapshot()  # nothing writes the bundle while it is timed
    spec = snap.info.preprocess
    e2e, e2e_cpu = np.empty(rounds), np.empty(rounds)
    st = {s: np.empty(rounds) for s in STAGES}
    st_cpu = {s: np.empty(rounds) for s in STAGES}
    ref = OnnxModel(reference, 1) if reference is not None else None
    ref_ms = np.empty(rounds)
    accepted = 0
    clock = time.perf_counter_ns
    for i in range(-3, rounds):  # three warm-up rounds
        img = images[i % len(images)]
        w, c = [clock()], [time.thread_time_ns()]

        def mark() -> None:
            w.append(clock())
            c.append(time.thread_time_ns())

        r = eng.query(img, domain=target, k=k)
        mark()
        im = decoded(img, spec)
        mark()
        im = framed(im, spec)
        mark()
        pix = np.asarray(fit_square(im, spec.size, spec.resample), dtype=np.uint8)
        mark()
        x = normalize(pix[None], spec)
        mark()
        v = snap.encoder.embed(x)
        mark()
        eng.query_batch(vectors=v, domain=target, k=k, no_reject=True)
        mark()
        snap.decisions(v, target)
        mark()
        if ref is not None:
            t0 = clock()
            ref.run(x)
            if i >= 0:
                ref_ms[i] = (clock() - t0) / 1e6
        if i < 0:
            continue
        e2e[i], e2e_cpu[i] = (w[1] - w[0]) / 1e6, (c[1] - c[0]) / 1e6
        for j, s in enumerate(STAGES, start=1):
            st[s][i], st_cpu[s][i] = (w[j + 1] - w[j]) / 1e6, (c[j + 1] - c[j]) / 1e6
        accepted += bool(r.accepted)
    eng.close()
    p50 = {s: float(np.median(v)) for s, v in st.items()}
    total = sum(p50[s] for s in STAGES[:6])
    stages = {s: {**summary(st[s]), "cpu": summary(st_cpu[s]),
                  "share_of_stage_sum": (p50[s] / total if total else 0.0),
                  "what": STAGE_NOTES[s]} for s in STAGES}
    e2e_p50, enc_p50 = float(np.median(e2e)), p50["encode"]
    versus = {"encoder_alone_p50_ms": enc_p50, "end_to_end_vs_encoder": e2e_p50 / enc_p50 if enc_p50 else None}
    if ref is not None:
        ref_p50 = float(np.median(ref_ms))
        versus.update({"reference": REFERENCE_NOTE, "reference_p50_ms": ref_p50,
                       "end_to_end_vs_reference": e2e_p50 / ref_p50, "encoder_vs_reference": enc_p50 / ref_p50})
    return {"source": src, "target": target, "k": k, "rounds": rounds, "distinct_images": len(images),
            "versus": versus,
            "threads": 1, "end_to_end": summary(e2e), "end_to_end_cpu": summary(e2e_cpu),
            "stages": stages, "stage_p50_sum_ms": total, "accepted_fraction": accepted / rounds,
            "decode_and_preprocess_share": (p50["decode"] + p50["frame"] + p50["resize"] + p50["normalise"]) / total
            if total else 0.0}
