"""The ONNX encoder session: preprocessed images in, unit-length float32 embeddings out.

onnxruntime's `InferenceSession.run` may be called from several threads at once, so one session
serves every query thread of an `Engine`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BundleError
from .geometry import unit_rows

DEFAULT_BATCH = 32


def open_session(path: Path, threads: int | None = None):
    """The one way uem opens an ONNX model: CPU, full graph optimisation, sequential execution.

    threads None/0 lets onnxruntime use every physical core; 1 pins it to one thread. Export
    (calibration statistics, parity) and the benchmarks use it too, so they measure what the engine runs.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads or 0)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class Encoder:
    """CPU onnxruntime session with full graph optimisation; batch size read from the model."""

    def __init__(self, path: Path, *, threads: int | None = None, batch_size: int = DEFAULT_BATCH) -> None:
        try:
            self._session = open_session(path, threads)
        except Exception as e:  # onnxruntime raises its own exception types for a bad model
            raise BundleError(f"{path}: onnxruntime cannot load the encoder ({e})") from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise BundleError(f"{path}: encoder must have one input, has {len(inputs)}")
        self.input_name = inputs[0].name
        self.output_name = outputs[0].name
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise BundleError(f"{path}: encoder input must be N x 3 x H x W, is {shape}")
        self.input_shape = shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self.batch_size = self.fixed_batch or max(1, int(batch_size))

    def check(self, size: int, dim: int) -> None:
        """Fail at open, not at the first query, when the model disagrees with the manifest."""
        c, h, w = self.input_shape[1:]
        for got, want, what in ((c, 3, "channels"), (h, size, "height"), (w, size, "width")):
            if isinstance(got, int) and got != want:
                raise BundleError(f"encoder input {what} is {got}, manifest says {want}")
        out = self.embed(np.zeros((1, 3, size, size), dtype=np.float32), normalise=False)
        if out.shape != (1, dim):
            raise BundleError(f"encoder outputs {out.shape[1:]}, manifest says embedding dim {dim}")

    def embed(self, x: np.ndarray, *, normalise: bool = True) -> np.ndarray:
        """float32 (N, 3, S, S) -> float32 (N, D), L2-normalised; runs in chunks of batch_size."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            dim = self._session.get_outputs()[0].shape[-1]
            return np.zeros((0, dim if isinstance(dim, int) else 0), dtype=np.float32)
        parts = []
        for i in range(0, len(x), self.batch_size):
            chunk = x[i:i + self.batch_size]
            if self.fixed_batch and len(chunk) != self.fixed_batch:
                chunk = np.concatenate([chunk, np.zeros((self.fixed_batch - len(chunk),) + chunk.shape[1:],
                                                        np.float32)])
            y = self._session.run([self.output_name], {self.input_name: chunk})[0]
            parts.append(np.asarray(y, dtype=np.float32).reshape(len(chunk), -1)[:len(x[i:i + self.batch_size])])
        out = np.concatenate(parts)
        return unit_rows(out) if normalise else out
