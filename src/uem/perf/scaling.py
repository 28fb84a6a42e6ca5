"""Index scaling: one hnswlib index of N synthetic unit vectors next to numpy
brute force on the same data — build time, memory, recall@10 against exact search, query latency.

The index is built exactly as `DomainIndex.build` builds a domain (same hnswlib calls and
parameters), only fed in chunks so a progress bar can move during a million-vector build.
Latencies are single queries on one thread, HNSW and brute force interleaved query by query.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
from typing import Callable

import numpy as np

from .measure import load_average, peak_rss_mb, probe_source, summary, vectors_and_links
from .synthetic import ClusterSpec, brute_force_query, clustered, exact_topk, recall_at_k, uniform

Progress = Callable[[int, int], None]


def make_data(kind: str, n: int, dim: int, seed: int, spec: ClusterSpec | None = None) -> np.ndarray:
    """n + queries vectors of `kind`: "clustered" (the mixture `spec`, default ClusterSpec()) or
    "uniform"."""
    if kind == "clustered":
        return clustered(n, dim, seed=seed, spec=spec or ClusterSpec())
    if kind == "uniform":
        return uniform(n, dim, seed=seed)
    raise ValueError(f"unknown data kind {kind!r} (clustered or uniform)")


def spec_like(bundle) -> tuple[ClusterSpec, int, dict]:
    """(the mixture fitted to `bundle`'s largest domain, the bundle's width, real vs synthetic
    shape): how the index benchmarks draw vectors shaped like a bundle's at sizes it does not have."""
    from ..engine.bundle import read_bundle
    from .synthetic import fit_spec

    info = read_bundle(bundle)
    domain = max(info.domains, key=lambda d: info.domains[d].count)
    spec, want, got = fit_spec(np.asarray(info.load_vectors(domain), np.float32))
    return spec, info.embed_dim, {"bundle": str(bundle), "domain": domain, "real": want, "synthetic": got}


def build_index(data: np.ndarray, *, M: int, ef_construction: int, threads: int, seed: int = 0,
                chunk: int = 20000, progress: Progress | None = None):
    import hnswlib

    idx = hnswlib.Index(space="ip", dim=int(data.shape[1]))
    idx.init_index(max_elements=len(data), M=M, ef_construction=ef_construction, random_seed=seed)
    for s in range(0, len(data), chunk):
        part = data[s:s + chunk]
        idx.add_items(part, np.arange(s, s + len(part)), num_threads=threads)
        if progress is not None:
            progress(s + len(part), len(data))
    return idx


# Fresh interpreter: RSS growth from loading one saved hnswlib index (argv: file, dim, count).
_LOAD_PROBE_BODY = r"""
import sys, hnswlib
def rss():
    return proc_status_mb("VmRSS")
idx = hnswlib.Index(space="ip", dim=int(sys.argv[2]))
r0 = rss()
idx.load_index(sys.argv[1], max_elements=int(sys.argv[3]))
print(rss() - r0)
"""


def index_memory(idx, dim: int, n: int) -> tuple[int, float | None]:
    """(saved file bytes, MB of RSS a fresh process gains by loading it) — what an engine holds.

    Measured in a fresh process because RSS deltas inside this one are blurred by the memory the
    data generation freed and hnswlib then reused."""
    with tempfile.TemporaryDirectory(prefix="uem-scaling-") as tmp:
        path = os.path.join(tmp, "index.bin")
        idx.save_index(path)
        size = os.path.getsize(path)
        res = subprocess.run([sys.executable, "-c", probe_source() + _LOAD_PROBE_BODY, path, str(dim), str(n)],
                             capture_output=True, text=True, check=False)
    try:
        return size, float(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return size, None


def _single_thread_blas():
    """numpy's BLAS limited to one thread (brute force gets the same single core as HNSW)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib
        return contextlib.nullcontext(), "BLAS threads not limited (threadpoolctl missing)"
    return threadpool_limits(limits=1, user_api="blas"), "1 BLAS thread (threadpoolctl)"


def measure(kind: str, n: int, *, dim: int = 128, M: int = 32, ef_construction: int = 200,
            ef_search: int = 128, ef_sweep: tuple[int, ...] = (32, 64, 128, 256, 512),
            queries: int = 1000, timed: int = 200, threads: int = 2, seed: int = 0,
            spec: ClusterSpec | None = None, label: str | None = None,
            progress: Progress | None = None, note: Callable[[str], None] = lambda _m: None) -> dict:
    """Everything measured for one (data kind, N): JSON-ready."""
    load_start = load_average()
    t = time.perf_counter()
    allv = make_data(kind, n + queries, dim, seed, spec)
    data, qs = np.ascontiguousarray(allv[:n]), np.ascontiguousarray(allv[n:])
    del allv
    gen_s = time.perf_counter() - t
    note(f"{kind} N={n}: exact ground truth for {queries} queries")
    t = time.perf_counter()
    truth = exact_topk(data, qs, 10)
    truth_s = time.perf_counter() - t

    gc.collect()
    note(f"{kind} N={n}: building HNSW (M {M}, ef_construction {ef_construction}, {threads} threads)")
    t = time.perf_counter()
    idx = build_index(data, M=M, ef_construction=ef_construction, threads=threads, seed=seed,
                      progress=progress)
    build_s = time.perf_counter() - t
    note(f"{kind} N={n}: memory of the index, loaded in a fresh process")
    file_bytes, loaded_mb = index_memory(idx, dim, n)

    sweep = {}
    for ef in sorted(set(ef_sweep) | {ef_search}):
        idx.set_ef(ef)
        labels, _ = idx.knn_query(qs, k=10, num_threads=1)
        sweep[str(ef)] = {"recall_at_10": recall_at_k(labels.astype(np.int64), truth)}
        ms = np.empty(timed)
        for i in range(timed):
            q = qs[i:i + 1]
            t = time.perf_counter()
            idx.knn_query(q, k=10, num_threads=1)
            ms[i] = (time.perf_counter() - t) * 1e3
        sweep[str(ef)]["query"] = summary(ms)

    note(f"{kind} N={n}: {timed} single queries, HNSW (ef {ef_search}) and brute force interleaved")
    idx.set_ef(ef_search)
    limit, blas_note = _single_thread_blas()
    h_ms, b_ms = np.empty(timed), np.empty(timed)
    with limit:
        for i in range(timed):
            q = qs[i:i + 1]
            t0 = time.perf_counter()
            idx.knn_query(q, k=10, num_threads=1)
            t1 = time.perf_counter()
            brute_force_query(data, qs[i], 10)
            t2 = time.perf_counter()
            h_ms[i], b_ms[i] = (t1 - t0) * 1e3, (t2 - t1) * 1e3
    hnsw, brute = summary(h_ms), summary(b_ms)
    level0 = n * vectors_and_links(dim, M)
    return {
        "data": label or kind, "n": n, "dim": dim, "queries": queries, "timed_queries": timed,
        "cluster_spec": (spec or ClusterSpec()).to_dict() if kind == "clustered" else None,
        "hnsw": {"M": M, "ef_construction": ef_construction, "ef_search": ef_search,
                 "build_threads": threads},
        "generate_s": gen_s, "exact_ground_truth_s": truth_s,
        "build_s": build_s, "build_vectors_per_s": n / build_s,
        "index_rss_mb": loaded_mb, "index_file_bytes": file_bytes,
        "index_level0_bytes": level0, "vectors_bytes": int(data.nbytes),
        "recall_at_10": sweep[str(ef_search)]["recall_at_10"],
        "hnsw_query": hnsw, "brute_force_query": brute, "brute_force_blas": blas_note,
        "speedup_vs_brute_force": brute["p50_ms"] / hnsw["p50_ms"],
        "ef_sweep": sweep, "peak_rss_mb": peak_rss_mb(),
        "load_average_start": load_start, "load_average_end": load_average(),
    }
