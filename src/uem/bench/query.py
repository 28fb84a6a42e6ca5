"""Item 2 of `uemctl bench`: one query through `Engine.query` end to end, and where its time goes.

Each round times the real `Engine.query(path)` on one thread, then the same image through the same
steps one by one (decode, letter-box resize, normalise, encode, HNSW search + open-set decision,
and the decision alone), so the breakdown and the end-to-end numbers see the same load. Queries are
the bundle's own items of one domain, searched in another (the product's cross-domain case).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..engine import Engine
from ..engine.bundle import BundleInfo
from ..engine.preprocess import fit_square, load_image, normalize
from .images import sample_items
from .measure import summary

STAGES = ("decode", "resize", "normalise", "encode", "search + reject", "reject only")
STAGE_NOTES = {
    "decode": "open + decode + EXIF + RGB on white (load_image)",
    "resize": "letter-box to the input size (fit_square)",
    "normalise": "uint8 -> float32 CHW, mean/std",
    "encode": "onnxruntime int8, batch 1",
    "search + reject": "Engine.query_vectors: HNSW top-k + open-set decision + hits (always built)",
    "reject only": "OpenSetRule.decide (part of the line above)",
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
                seed: int = 0, note: Callable[[str], None] = lambda _m: None) -> dict:
    """The end-to-end section of the bench report (JSON-ready)."""
    src, target, images = _pick(info, distinct, seed)
    if not images:
        return {"note": "skipped: the bundle's source images were not found"}
    note(f"query: {rounds} rounds, {len(images)} {src} images searched in {target}, one thread")
    eng = Engine.open(bundle, threads=1)
    spec = eng.preprocess_spec
    rule = eng.open_set_rule
    e2e = np.empty(rounds)
    st = {s: np.empty(rounds) for s in STAGES}
    accepted = 0
    for i in range(-3, rounds):  # three warm-up rounds
        img = images[i % len(images)]
        t0 = time.perf_counter()
        r = eng.query(img, domain=target, k=k)
        t1 = time.perf_counter()
        im = load_image(img, draft_size=spec.size)
        t2 = time.perf_counter()
        pix = np.asarray(fit_square(im, spec.size, spec.resample), dtype=np.uint8)
        t3 = time.perf_counter()
        x = normalize(pix[None], spec)
        t4 = time.perf_counter()
        v = eng.embed_tensors(x)
        t5 = time.perf_counter()
        r2 = eng.query_vectors(v, target, k, no_reject=True)[0]
        t6 = time.perf_counter()
        top = r2.hits[0].score if r2.hits else None
        rule.decide(v[0], target, top, None)
        t7 = time.perf_counter()
        if i < 0:
            continue
        e2e[i] = (t1 - t0) * 1e3
        for s, a, b in zip(STAGES, (t1, t2, t3, t4, t5, t6), (t2, t3, t4, t5, t6, t7)):
            st[s][i] = (b - a) * 1e3
        accepted += bool(r.accepted)
    eng.close()
    p50 = {s: float(np.median(v)) for s, v in st.items()}
    total = sum(p50[s] for s in STAGES[:5])
    stages = {s: {**summary(st[s]), "share_of_stage_sum": (p50[s] / total if total else 0.0),
                  "what": STAGE_NOTES[s]} for s in STAGES}
    return {"source": src, "target": target, "k": k, "rounds": rounds, "distinct_images": len(images),
            "threads": 1, "end_to_end": summary(e2e), "stages": stages,
            "stage_p50_sum_ms": total, "accepted_fraction": accepted / rounds,
            "decode_and_preprocess_share": (p50["decode"] + p50["resize"] + p50["normalise"]) / total
            if total else 0.0}
