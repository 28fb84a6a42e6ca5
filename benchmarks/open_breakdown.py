"""Where `Engine.open` spends its time, stage by stage, in fresh processes (benchmarks/RESULTS-archive.md,
"Performance"). Mirrors what read_bundle + Engine._load do, in the same order.

    .venv/bin/python benchmarks/open_breakdown.py BUNDLE [--items 100000] [--repeats 3]

Prints the median of each stage over the repeats (each repeat a fresh interpreter, page cache warm),
in wall-clock and in process CPU time (robust on a shared machine).
--items N: measure a temporary copy whose largest domain was grown to N items with synthetic
vectors (the same copy `uemctl bench` measures for its footprint).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STAGES = r"""
import json, sys, time
from pathlib import Path
t, c = {}, {}
t0, c0 = time.perf_counter(), time.process_time()
import uem.engine.bundle.reader as B
from uem.engine.bundle.manifest import Manifest, read_manifest
from uem.engine.encoder import Encoder
from uem.engine.index import check_index_file
t["import uem.engine"], c["import uem.engine"] = time.perf_counter() - t0, time.process_time() - c0
root = Path(sys.argv[1])
def stage(name, fn):
    s, sc = time.perf_counter(), time.process_time()
    r = fn()
    t[name] = t.get(name, 0.0) + time.perf_counter() - s
    c[name] = c.get(name, 0.0) + time.process_time() - sc
    return r
m = stage("manifest (parse + own checksum)", lambda: read_manifest(root))
files = stage("sha256 of every file", lambda: B._verify_files(root, Manifest.upgrade(m).files))
dim = int(m["model"]["embed_dim"])
for d in m["domains"]:
    f = d["files"]
    stage("items.jsonl (validate + index rows)", lambda: B._parse_items(files[f["items"]], d["count"]))
    stage("index.bin structural check", lambda: check_index_file(files[f["index"]].path, dim=dim,
                                                                 count=d["count"], M=m["hnsw"]["M"]))
info = stage("read_bundle again (everything above, for load_index)", lambda: B.read_bundle(root))
stage("hnswlib load_index", lambda: [info.load_index(d) for d in info.domains])
enc = stage("onnxruntime session", lambda: Encoder(info.encoder.path, threads=1))
stage("encoder check (1 inference)", lambda: enc.check(info.preprocess.size, info.embed_dim))
print(json.dumps({"wall": t, "cpu": c}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--items", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="uem-open-") as tmp:
        bundle = Path(args.bundle)
        if args.items:
            from uem.perf.footprint import grown_copy
            from uem.engine.bundle import read_bundle

            info = read_bundle(bundle)
            domain = max(info.domains, key=lambda d: info.domains[d].count)
            bundle = grown_copy(bundle, info, domain, args.items, Path(tmp), seed=0)
        runs = []
        for _ in range(args.repeats):
            res = subprocess.run([sys.executable, "-c", STAGES, str(bundle)], capture_output=True,
                                 text=True, check=True)
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"| Engine.open stage ({args.repeats} fresh processes, median) | wall s | CPU s |\n|---|---|---|")
    skip = ("read_bundle again",)
    for k in runs[0]["wall"]:
        if k.startswith(skip):
            continue
        print(f"| {k} | {np.median([r['wall'][k] for r in runs]):.3f} | "
              f"{np.median([r['cpu'][k] for r in runs]):.3f} |")
    tot = {w: [sum(v for k, v in r[w].items() if k != "import uem.engine" and not k.startswith(skip))
               for r in runs] for w in ("wall", "cpu")}
    print(f"| sum of the open stages | {np.median(tot['wall']):.3f} | {np.median(tot['cpu']):.3f} |")


if __name__ == "__main__":
    main()
