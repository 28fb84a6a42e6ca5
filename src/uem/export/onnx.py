"""EncoderNet -> ONNX (fp32), and the check that onnxruntime computes what torch computes.

The dynamo exporter (torch.export + onnxscript, with its graph optimiser) gives the cleanest graph for
this network: BatchNorm folded into Conv/Gemm, the fixed TF-SAME ZeroPad2d folded into each Conv's
`pads`, ReLU6 as Clip(0, 6), and the L2 normalisation kept in the graph (ReduceL2 + Div) so the model
outputs the final unit-length embedding. The legacy TorchScript exporter leaves 17 Pad subgraphs
(Slice/Transpose/Reshape/ConstantOfShape...) and an unfolded BatchNorm1d in the head, which the int8
quantizer then has to work around.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
OPSET = 18  # the dynamo exporter's native opset; onnxruntime >= 1.17 runs it


@contextlib.contextmanager
def _quiet():
    """The exporter prints its steps on stdout and warns about torchvision ops we never use."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_onnx(encoder: nn.Module, path: Path, input_size: int, opset: int = OPSET) -> Path:
    """Write `encoder` (eval mode) as a single-file ONNX model: image [N,3,S,S] -> embedding [N,D]."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder = encoder.eval()
    example = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            encoder, (example,), None, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            opset_version=opset, dynamo=True, external_data=False, optimize=True, verbose=False,
            dynamic_shapes=({0: batch},))
        program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    if drop_broadcast_expand(model):
        onnx.save(model, str(path))
    return path


def drop_broadcast_expand(model: onnx.ModelProto) -> int:
    """Remove Expand nodes whose only consumers are broadcasting Div/Mul (F.normalize's divisor).

    `x / clamp(norm).expand_as(x)` exports as Shape -> Concat -> Expand -> Div; Div broadcasts by itself,
    and the Expand's data-dependent shape is what onnxruntime's symbolic shape inference (run by
    quant_pre_process) cannot follow. Returns how many were removed; dead nodes are pruned after.
    """
    graph = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    removed = 0
    for node in list(graph.node):
        if node.op_type != "Expand" or node.output[0] in outputs:
            continue
        users = consumers.get(node.output[0], [])
        if not users or any(u.op_type not in ("Div", "Mul") for u in users):
            continue
        for u in users:
            for i, name in enumerate(u.input):
                if name == node.output[0]:
                    u.input[i] = node.input[0]
        graph.node.remove(node)
        removed += 1
    if removed:
        _prune_dead(graph)
    return removed


def _prune_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs is used (repeatedly), then initializers nothing reads."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


@dataclass
class Agreement:
    """How close two embedding sets are, row by row."""

    cos_mean: float
    cos_min: float
    max_abs: float

    def to_dict(self) -> dict:
        return {"cos_mean": self.cos_mean, "cos_min": self.cos_min, "max_abs": self.max_abs}


def compare(a: np.ndarray, b: np.ndarray) -> Agreement:
    """Row-wise cosine (inputs need not be normalised) and the largest absolute difference."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-12)
    return Agreement(float(cos.mean()), float(cos.min()), float(np.abs(a - b).max()))


def torch_embed(encoder: nn.Module, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Reference embeddings from the torch encoder, float32 [N, D]."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(encoder(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)
