"""Small measuring tools shared by every benchmark: interleaved timing, percentiles, RSS, machine facts.

Why interleaved: on a shared machine the load changes from second to second; running candidate A,
then B, then C inside one loop exposes all of them to the same load, so their *ratios* hold even when
the absolute times do not.
"""

from __future__ import annotations

import functools
import inspect
import os
import platform
import resource
import time
from typing import Callable

import numpy as np


def interleaved(fns: dict[str, Callable[[], object]], iters: int, warmup: int = 3,
                cpu: bool = False) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Milliseconds of each call, `iters` rounds of calling every function once in turn.

    cpu=True also returns the calling thread's CPU milliseconds per call (time.thread_time): for
    single-threaded work that is what a quiet machine would take, whatever else runs on the cores.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ms = {k: np.empty(iters) for k in fns}
    cms = {k: np.empty(iters) for k in fns}
    for i in range(iters):
        for k, fn in fns.items():
            c = time.thread_time_ns()
            t = time.perf_counter()
            fn()
            ms[k][i] = (time.perf_counter() - t) * 1e3
            cms[k][i] = (time.thread_time_ns() - c) / 1e6
    return (ms, cms) if cpu else ms


def summary(ms: np.ndarray) -> dict:
    """p50 / p99 / mean of a sample of milliseconds (JSON-ready)."""
    ms = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "n": int(len(ms))}


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB."""
    v = proc_status_mb("VmHWM")
    if v is None:
        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return v


def proc_status_mb(name: str) -> float | None:
    """A kB field of /proc/self/status ("VmRSS" resident now, "VmHWM" its peak) in MB; None off
    Linux. The one reader of it: stdlib only, no imports inside, so the fresh-interpreter probes
    (uem.perf.footprint, uem.perf.scaling) paste its source (`probe_source`) and import nothing
    that would itself show up in what they measure."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


@functools.cache
def probe_source() -> str:
    """`proc_status_mb`'s definition as source, for a probe script run with `python -c` (read when a
    probe first runs, not at import)."""
    return inspect.getsource(proc_status_mb)


def vectors_and_links(dim: int, m: int) -> int:
    """What an item must cost in hnswlib: its float32 vector, its level-0 links (a count and 2M
    neighbour ids, 4 bytes each) and its 8-byte label; upper levels, the item's record and
    allocator slack come on top."""
    return 4 * dim + 4 + 8 * m + 8


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict:
    """What the numbers were measured on: CPU, cores, load, library versions."""
    import hnswlib  # noqa: F401  (its version is not exposed; the import proves it is there)
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "load_average": load_average(),
            "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
