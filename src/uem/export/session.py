"""onnxruntime sessions for the export side (calibration statistics, parity, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort


def make_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session; threads=0 lets onnxruntime use every core, 1 pins it to a single thread."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def ort_embed(session: ort.InferenceSession, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """float32 [N,3,S,S] -> float32 [N,D] through `session`."""
    name = session.get_inputs()[0].name
    out = [session.run(None, {name: np.ascontiguousarray(x[i:i + batch], dtype=np.float32)})[0]
           for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
