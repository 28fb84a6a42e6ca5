#!/usr/bin/env python
"""Where an encoder's batch-1 time goes, op type by op type (onnxruntime's own profiler).

    .venv/bin/python benchmarks/probes/op_profile.py BUNDLE [--runs 200]

Profiles the bundle's int8 encoder and, when the bundle has one, its fp32 twin: 200 runs of one
random 128 px picture on one thread, the session set up as the engine sets it up (full graph
optimisation). Convolutions are split into depthwise (group > 1) and the rest (pointwise and the
stem), because int8 pays off unevenly between the two. Decided: why int8 stays below 2x its fp32
copy on this network (RESULTS.md, "Performance").
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from uem.engine.bundle import read_bundle


def profile(path: Path, runs: int, work: Path) -> dict[tuple[str, str], float]:
    """ms per run by (op type, conv kind) over `runs` runs of one thread."""
    o = ort.SessionOptions()
    o.enable_profiling = True
    o.profile_file_prefix = str(work / "ort")
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.optimized_model_filepath = str(work / f"{path.stem}.optimised.onnx")
    o.log_severity_level = 3
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    size = s.get_inputs()[0].shape[-1]
    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    name = s.get_inputs()[0].name
    for _ in range(runs):
        s.run(None, {name: x})
    events = json.loads(Path(s.end_profiling()).read_text())
    kind = {}
    for node in onnx.load(o.optimized_model_filepath).graph.node:
        group = [a.i for a in node.attribute if a.name == "group"]
        kind[node.name] = ("depthwise" if group and group[0] > 1 else "pointwise/stem") \
            if "Conv" in node.op_type else ""
    out: dict[tuple[str, str], float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            out[(e["args"]["op_name"], kind.get(node, ""))] += e["dur"] / runs / 1000.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    info = read_bundle(args.bundle)
    models = {"int8": info.encoder.path}
    if info.encoder_fp32 is not None:
        models["fp32"] = info.encoder_fp32.path
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in models.items():
            prof = profile(Path(path), args.runs, Path(tmp))
            total = sum(prof.values())
            print(f"\n{label} encoder: {total:.3f} ms of kernels per run\n")
            print("| op | kind | ms per run | share |\n|---|---|---|---|")
            for (op, k), ms in sorted(prof.items(), key=lambda kv: -kv[1])[:10]:
                print(f"| {op} | {k} | {ms:.3f} | {100 * ms / total:.0f} % |")


if __name__ == "__main__":
    main()
