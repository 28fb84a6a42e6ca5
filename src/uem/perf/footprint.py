"""Item 4 of `uemctl bench`: what the engine costs a process — import + open time and memory.

Measured in a fresh interpreter (`PROBE_BODY`, run as a subprocess) so nothing this process already
imported or allocated leaks into the numbers; several probes, medians of times. For the "N items"
case a temporary copy of the bundle gets synthetic embedding-like vectors appended to its largest
domain through the product's own incremental add (`append_to_domain`, what `uemctl index add` runs),
then is probed the same way.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..engine.bundle import BundleInfo, append_to_domain, read_bundle
from .measure import probe_source, vectors_and_links
from .synthetic import clustered

# Runs in a fresh interpreter: argv = bundle, domain. Prints one JSON line.
PROBE_BODY = r"""
import json, sys, time
def rss(field="VmRSS"):
    return proc_status_mb(field)
r0 = rss()
t0, c0 = time.perf_counter(), time.process_time()
from uem.engine import Engine
t1, c1 = time.perf_counter(), time.process_time()
r1 = rss()
eng = Engine.open(sys.argv[1], threads=1)
t2, c2 = time.perf_counter(), time.process_time()
r2 = rss()
import numpy as np
v = np.random.default_rng(0).standard_normal(eng.snapshot().info.embed_dim).astype(np.float32)
eng.query(vector=v, domain=sys.argv[2], k=10)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "first_query_s": t3 - t2,
                  "import_cpu_s": c1 - c0, "open_cpu_s": c2 - c1,
                  "rss_start_mb": r0, "rss_after_import_mb": r1, "rss_after_open_mb": r2,
                  "rss_after_query_mb": rss(), "peak_rss_mb": rss("VmHWM"),
                  "items": eng.count(sys.argv[2])}))
"""


def probe(bundle: Path, domain: str, repeats: int = 3) -> dict:
    """Medians of `repeats` fresh-interpreter probes of opening `bundle` (times) and its RSS."""
    runs = []
    for _ in range(repeats):
        res = subprocess.run([sys.executable, "-c", probe_source() + PROBE_BODY, str(bundle), domain], capture_output=True,
                             text=True, check=False)
        if res.returncode != 0:
            raise RuntimeError(f"footprint probe failed: {res.stderr.strip()[-2000:]}")
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    out = {k: float(np.median([r[k] for r in runs])) for k in runs[0] if runs[0][k] is not None}
    out["import_plus_open_s"] = float(np.median([r["import_s"] + r["open_s"] for r in runs]))
    out["items"] = int(runs[0]["items"])
    out["repeats"] = repeats
    out["open_s_all"] = [r["open_s"] for r in runs]
    return out


def grown_copy(bundle: Path, info: BundleInfo, domain: str, items: int, workdir: Path,
                seed: int) -> Path:
    """A copy of `bundle` whose `domain` holds `items` rows (synthetic rows appended)."""
    copy = workdir / "grown.uem"
    shutil.copytree(bundle, copy)
    n = items - info.domains[domain].count
    if n > 0:
        vecs = clustered(n, info.embed_dim, seed=seed)
        rows = [{"id": f"synthetic/{i:07d}", "path": f"/data/synthetic/{domain}/{i:07d}.png"}
                for i in range(n)]
        append_to_domain(copy, domain, vecs, rows)
    return copy


def bench_footprint(bundle: Path, info: BundleInfo, *, items: int = 100_000, repeats: int = 3,
                    seed: int = 0, note: Callable[[str], None] = lambda _m: None) -> dict:
    """The footprint section: the bundle as it is, and (items > its largest domain) grown to `items`."""
    domain = max(info.domains, key=lambda d: info.domains[d].count)
    note(f"footprint: {repeats} fresh-process probes of the bundle as it is")
    base = probe(bundle, domain, repeats)
    res = {"domain": domain, "embed_dim": info.embed_dim, "hnsw_M": info.hnsw.M, "as_is": base}
    if items > info.domains[domain].count:
        with tempfile.TemporaryDirectory(prefix="uem-bench-") as tmp:
            note(f"footprint: growing a copy's {domain} to {items} items (synthetic vectors, "
                 "uemctl index add's code path)")
            grown = grown_copy(bundle, info, domain, items, Path(tmp), seed)
            g = read_bundle(grown)
            d = g.domains[domain]
            note(f"footprint: {repeats} fresh-process probes of the grown copy")
            res["grown"] = probe(grown, domain, repeats)
            res["grown"]["file_bytes"] = {"index.bin": d.index.size, "vectors.npy": d.vectors.size,
                                          "items.jsonl": d.items_file.size}
            added = res["grown"]["items"] - base["items"]
            if added > 0:
                res["rss_per_added_item_bytes"] = (res["grown"]["rss_after_query_mb"]
                                                   - base["rss_after_query_mb"]) * 2**20 / added
                res["vectors_and_links_bytes"] = vectors_and_links(info.embed_dim, info.hnsw.M)
                res["rss_per_item_vs_vectors_and_links"] = (res["rss_per_added_item_bytes"]
                                                            / res["vectors_and_links_bytes"])
    return res
