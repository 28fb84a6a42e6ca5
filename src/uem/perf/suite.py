"""`uemctl bench`: the encoder, the end-to-end query and the engine footprint on one bundle,
plus the verdict on each edge-deployment target. `quick` shrinks every repetition count (and skips
growing a 100k-item copy) so it finishes in seconds; its numbers are indicative only."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ..engine.bundle import read_bundle
from .encoder import FP32, TORCH, bench_encoder
from .footprint import bench_footprint
from .measure import load_average, machine
from .query import bench_query

TARGET_ITEMS = 100_000


@dataclass(frozen=True)
class Plan:
    """How much to repeat; FULL for reported numbers, QUICK for a smoke run."""

    encoder_iters: int = 300
    encoder_batch_iters: int = 10
    parity_images: int = 300
    query_rounds: int = 300
    query_images: int = 100
    footprint_items: int = TARGET_ITEMS
    footprint_repeats: int = 3


FULL = Plan()
QUICK = Plan(encoder_iters=30, encoder_batch_iters=3, parity_images=32, query_rounds=30,
             query_images=30, footprint_items=0, footprint_repeats=1)


def run_bench(bundle: Path, *, quick: bool = False, run_dir: Path | None = None,
              items: int | None = None, seed: int = 0, reference: bool = True,
              note: Callable[[str], None] = lambda _m: None) -> dict:
    """Every measurement of `uemctl bench` as one JSON-ready dict (see `targets` for the verdicts)."""
    plan = QUICK if quick else FULL
    if items is not None:
        plan = Plan(**{**asdict(plan), "footprint_items": int(items)})
    info = read_bundle(bundle)
    report = {"bundle": str(bundle), "quick": quick, "plan": asdict(plan), "machine": machine()}
    report["encoder"] = bench_encoder(info, run_dir=run_dir, iters=plan.encoder_iters,
                                      batch_iters=plan.encoder_batch_iters,
                                      parity_images=plan.parity_images, seed=seed, note=note)
    with tempfile.TemporaryDirectory(prefix="uem-bench-ref-") as tmp:
        ref, report["reference"] = (_reference(Path(tmp), info.preprocess.size, note) if reference else
                                    (None, {"note": "skipped: --no-reference"}))
        report["query"] = bench_query(bundle, info, rounds=plan.query_rounds, distinct=plan.query_images,
                                      seed=seed, reference=ref, note=note)
    report["footprint"] = bench_footprint(bundle, info, items=plan.footprint_items,
                                          repeats=plan.footprint_repeats, seed=seed, note=note)
    report["load_average_end"] = load_average()
    report["targets"] = targets(report)
    return report


def _reference(tmp: Path, size: int, note: Callable[[str], None]) -> tuple[Path | None, dict]:
    """The plain network's ONNX file for the query's yardstick, or None (and why) without torch."""
    try:
        from ..export.reference import plain_network_onnx
    except ImportError as e:  # the runtime alone (no train extra): nothing to build it with
        return None, {"note": f"skipped: building the plain network needs torch ({e.name})"}
    note("query: exporting the plain network (the yardstick) to ONNX")
    return plain_network_onnx(tmp / "plain.onnx", size), {"model": "EfficientNet-Lite0 ImageNet, whole, fp32",
                                                          "input_size": size}


def _target(name: str, value: float | None, op: str, limit: float, unit: str = "", note: str = "",
            cpu: float | None = None) -> dict:
    """One verdict; `cpu` = the same quantity from thread CPU time (single-threaded timings only)."""
    def ok(v: float | None) -> bool | None:
        return None if v is None else (v >= limit if op == ">=" else v <= limit)
    return {"name": name, "value": value, "target": f"{op} {limit:g}{unit}", "met": ok(value),
            "value_cpu": cpu, "met_cpu": ok(cpu), "note": note}


def targets(r: dict) -> list[dict]:
    """The edge-deployment targets this report can judge (int8 speed-up and parity, query
    latency, open time and memory at 100k items); met None = not measured in this run (see note)."""
    enc, q, fp = r["encoder"], r["query"], r["footprint"]
    sp, spc = enc["int8_speedup_batch1"], enc.get("int8_speedup_batch1_cpu", {})
    par = enc["parity"]
    out = [
        _target("int8 speed-up vs onnxruntime fp32 (batch 1, 1 thread, p50)", sp.get(f"vs {FP32}"), ">=", 2.0, "x",
                "" if f"vs {FP32}" in sp else enc["columns"][FP32].get("note", ""), spc.get(f"vs {FP32}")),
        _target("int8 speed-up vs torch eager (batch 1, 1 thread, p50)", sp.get(f"vs {TORCH}"), ">=", 5.0, "x",
                "" if f"vs {TORCH}" in sp else enc["columns"][TORCH].get("note", ""), spc.get(f"vs {TORCH}")),
        _target("mean cosine int8 vs fp32", par.get("cos_mean"), ">=", 0.995, "", par.get("note", "")),
    ]
    e2e = q.get("end_to_end", {}).get("p50_ms")
    out.append(_target("end-to-end query p50 (1 thread)", e2e, "<=", 6.0, " ms", q.get("note", ""),
                       q.get("end_to_end_cpu", {}).get("p50_ms")))
    vs = q.get("versus", {})
    out.append(_target("end-to-end query p50 / the plain fp32 network's (same rounds)",
                       vs.get("end_to_end_vs_reference"), "<=", 1.0, "x",
                       "" if "end_to_end_vs_reference" in vs else r.get("reference", {}).get("note", q.get("note", ""))))
    out.append(_target("end-to-end query p50 / the int8 encoder's alone (same rounds)",
                       vs.get("end_to_end_vs_encoder"), "<=", 1.3, "x", q.get("note", "")))
    out.append(_target("decode + preprocess share of the query", q.get("decode_and_preprocess_share"),
                       "<=", 0.5, "", "'must not dominate'"))
    grown = fp.get("grown")
    at = grown if grown is not None else fp["as_is"]
    full = at["items"] >= TARGET_ITEMS
    why = "" if full else f"measured at {at['items']} items; the target is at {TARGET_ITEMS} (run without --quick)"
    rss = _target(f"engine RSS after open + query, {at['items']} items", at.get("rss_after_query_mb"),
                  "<=", 150.0, " MB", why)
    opened = _target(f"Engine.open time, {at['items']} items", at.get("open_s"), "<=", 0.5, " s",
                     why or f"import uem.engine adds {at.get('import_s', 0):.2f} s", at.get("open_cpu_s"))
    per_item = _target("RSS per added item / (4 x dim + HNSW links)", fp.get("rss_per_item_vs_vectors_and_links"),
                       "<=", 1.2, "x", why or f"{fp.get('rss_per_added_item_bytes', 0):.0f} B per item, "
                       f"{fp.get('vectors_and_links_bytes', 0):.0f} B of vector and level-0 links")
    for t in (rss, opened, per_item):
        if not full:
            t["met"] = None
        out.append(t)
    return out
