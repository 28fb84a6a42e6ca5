"""Item 1 of `uemctl bench`: what the bundle's int8 encoder costs and buys next to its fp32 twin.

Columns: onnxruntime int8 (the engine's encoder), onnxruntime fp32 (needs a bundle exported with
--keep-fp32) and torch eager fp32 (needs the training run and torch; imported only here, lazily).
Batch 1 on one thread (p50/p99 latency, the interactive query) and batch 32 on all threads
(images/s, bulk indexing), all timed interleaved in one process; model file sizes; and what int8
changes: cosine to fp32 and top-10 overlap of exact search over the bundle's stored vectors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..engine.bundle import BundleInfo
from ..engine.encoder import open_session
from ..engine.geometry import top_n, unit_rows
from ..engine.preprocess import preprocess_batch
from .images import sample_items
from .measure import interleaved, summary

INT8, FP32, TORCH = "onnxruntime int8", "onnxruntime fp32", "torch eager fp32"
OVERLAP_DEFINITION = ("per sampled image: exact top-10 over the stored vectors of every other domain "
                      "(the same domain when there is one), query embedded by int8 vs by fp32")

Note = Callable[[str], None]


class OnnxModel:
    """One onnxruntime session through uem's one session setup, plus how to feed it."""

    def __init__(self, path: Path, threads: int | None) -> None:
        self.session = open_session(path, threads)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0], np.float32).reshape(len(x), -1)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Unit rows, in chunks the model accepts."""
        step = self.fixed_batch or 32
        parts = []
        for s in range(0, len(x), step):
            c = x[s:s + step]
            pad = (self.fixed_batch or len(c)) - len(c)
            if pad:
                c = np.concatenate([c, np.zeros((pad,) + c.shape[1:], np.float32)])
            parts.append(self.run(c)[:len(c) - pad])
        y = np.concatenate(parts)
        return unit_rows(y)


def _torch_model(run_dir: Path | None, size: int) -> tuple[object | None, str]:
    """(callable taking a numpy batch, note). None with the reason when the column cannot run."""
    if run_dir is None:
        return None, "skipped: no training run given (--run RUN)"
    try:
        import torch

        from ..train.run import load_encoder
    except ImportError as e:
        return None, f"skipped: torch is not installed ({e.name})"
    model, cfg = load_encoder(Path(run_dir))
    if int(cfg.model.input_size) != size:
        return None, f"skipped: the run's input size {cfg.model.input_size} is not the bundle's {size}"

    def fn(x: np.ndarray) -> None:
        with torch.inference_mode():
            model(torch.from_numpy(x))

    return fn, f"run {run_dir}"


def _torch_threads(n: int | None) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(n if n else (os.cpu_count() or 1))


def bench_encoder(info: BundleInfo, *, run_dir: Path | None = None, iters: int = 300,
                  batch_iters: int = 10, batch: int = 32, parity_images: int = 300, seed: int = 0,
                  note: Note = lambda _m: None) -> dict:
    """The encoder section of the bench report (JSON-ready)."""
    size = info.preprocess.size
    files = {INT8: info.encoder.path, FP32: info.encoder_fp32.path if info.encoder_fp32 else None}
    cols: dict[str, dict] = {}
    for name, path in files.items():
        cols[name] = ({"available": True, "file_bytes": int(os.path.getsize(path))} if path else
                      {"available": False, "note": "skipped: the bundle has no fp32 encoder "
                                                   "(export with --keep-fp32)"})
    torch_fn, torch_note = _torch_model(run_dir, size)
    cols[TORCH] = {"available": torch_fn is not None, "note": torch_note}
    if torch_fn is not None:
        cols[TORCH]["file_bytes"] = int(os.path.getsize(Path(run_dir) / "encoder.pt"))

    picked = sample_items(info, max(batch, parity_images), seed=seed)
    images = [p for _, p in picked]
    if len(images) >= batch:
        xb = preprocess_batch(images[:batch], info.preprocess)
        input_note = f"real images from the bundle's items ({len(images)} found)"
    else:
        xb = np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype(np.float32)
        input_note = "random input: the bundle's source images were not found"
    x1 = xb[:1]

    # Batch 1, one thread, interleaved.
    note(f"encoder: batch 1, one thread, {iters} interleaved rounds")
    one = {n: OnnxModel(files[n], 1) for n in (INT8, FP32) if files[n]}
    fns: dict[str, Callable[[], object]] = {n: (lambda m=m: m.run(x1)) for n, m in one.items()
                                            if m.fixed_batch in (None, 1)}
    if torch_fn is not None:
        _torch_threads(1)
        fns[TORCH] = lambda: torch_fn(x1)
    ms, cpu = interleaved(fns, iters, warmup=min(10, iters), cpu=True)
    for n, v in ms.items():
        cols[n]["batch1_1thread"] = summary(v)
        cols[n]["batch1_1thread_cpu"] = summary(cpu[n])

    # Batch N, all threads.
    note(f"encoder: batch {batch}, all threads, {batch_iters} interleaved rounds")
    many = {n: OnnxModel(files[n], None) for n in (INT8, FP32) if files[n]}
    fns = {n: (lambda m=m: m.run(xb)) for n, m in many.items() if m.fixed_batch in (None, batch)}
    if torch_fn is not None:
        _torch_threads(None)
        fns[TORCH] = lambda: torch_fn(xb)
    ms = interleaved(fns, batch_iters, warmup=1)
    for n, v in ms.items():
        s = summary(v)
        s["images_per_s"] = batch / (s["p50_ms"] / 1e3)
        cols[n][f"batch{batch}_all_threads"] = s

    def p50(n: str, key: str = "batch1_1thread") -> float | None:
        return cols[n].get(key, {}).get("p50_ms")

    speedup = {f"vs {n}": (p50(n) / p50(INT8)) for n in (FP32, TORCH) if p50(n) and p50(INT8)}
    k = "batch1_1thread_cpu"
    speedup_cpu = {f"vs {n}": (p50(n, k) / p50(INT8, k)) for n in (FP32, TORCH)
                   if p50(n, k) and p50(INT8, k)}

    parity: dict = {"note": "skipped: the bundle has no fp32 encoder (export with --keep-fp32)"}
    if FP32 in many:
        picked = picked[:parity_images]
        note(f"encoder: int8 vs fp32 on {len(picked)} images")
        if picked:
            x = preprocess_batch([p for _, p in picked], info.preprocess)
            e8, e32 = many[INT8].embed(x), many[FP32].embed(x)
            cos = np.sum(e8 * e32, axis=1)
            parity = {"images": len(picked), "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                      "top10_overlap": _overlap(info, [d for d, _ in picked], e8, e32),
                      "overlap_definition": OVERLAP_DEFINITION}
        else:
            parity = {"note": "skipped: the bundle's source images were not found"}
    return {"input_size": size, "input": input_note, "batch": batch, "iters_batch1": iters,
            "iters_batch": batch_iters, "columns": cols, "int8_speedup_batch1": speedup,
            "int8_speedup_batch1_cpu": speedup_cpu,
            "parity": parity}


def _overlap(info: BundleInfo, doms: list[str], e8: np.ndarray, e32: np.ndarray, k: int = 10) -> float:
    scores = []
    names = list(info.domains)
    stored = {n: np.asarray(info.load_vectors(n), np.float32) for n in names}
    for i, d in enumerate(doms):
        for t in [n for n in names if n != d] or [d]:
            kk = min(k, len(stored[t]))
            a, b = top_n(stored[t] @ e8[i], kk)[0], top_n(stored[t] @ e32[i], kk)[0]
            scores.append(len(np.intersect1d(a, b)) / kk)
    return float(np.mean(scores))
