"""Static int8 quantization of the fp32 encoder with onnxruntime.quantization.

Calibration images are drawn evenly from every training domain (seeded), preprocessed by the engine's
single preprocessing, and fed to the calibrator in batches. `QuantConfig` holds every knob we
measured (benchmarks/quant_sweep.py); `DEFAULT` is the one that won — see benchmarks/RESULTS-archive.md, "Export parity and int8".
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process

from .biascorrect import bias_correct

_TYPES = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}
_FORMATS = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}


@dataclass(frozen=True)
class QuantConfig:
    """One quantization recipe.

    fp32_convs: the first N convolutions in graph order, and every node before them, stay fp32
      (EfficientNet-Lite0: 1 = the stem, 3 = stem + block 0). The stem's 3x3x3 kernels see flat
      white input on icons, where int8 rounding adds up instead of averaging out (biascorrect.py).
    fp32_tail_convs: the last N convolutions in graph order, and every node after them, stay fp32
      (1 = the last conv and everything after it: the 1280-channel head conv and the projection
      for the linear head, block 13's project conv, the grid cells and the projection for the grid
      head; on a 4x4 map at 128 px they cost little, and the linear projection's centred output is
      sensitive to their rounding).
    keep_fp32: ONNX op types left in fp32 everywhere (e.g. "Gemm": the projection head).
    bias_correction: fold the expected weight-rounding error into the biases (biascorrect.py).
    """

    format: str = "qoperator"
    activation: str = "u8"
    weight: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    method: str = "minmax"
    fp32_convs: int = 0
    fp32_tail_convs: int = 0
    keep_fp32: tuple[str, ...] = ()
    bias_correction: bool = False
    extra: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["keep_fp32"] = list(self.keep_fp32)
        d["extra"] = dict(self.extra)
        return d

    def label(self) -> str:
        parts = [self.format, f"{self.activation.upper()}{self.weight.upper()}",
                 "per-channel" if self.per_channel else "per-tensor", self.method]
        if self.reduce_range:
            parts.append("reduce_range")
        if self.fp32_convs:
            parts.append(f"fp32:first-{self.fp32_convs}-convs")
        if self.fp32_tail_convs:
            parts.append(f"fp32:last-{self.fp32_tail_convs}-convs")
        if self.keep_fp32:
            parts.append("fp32:" + "+".join(self.keep_fp32))
        if self.bias_correction:
            parts.append("bias-corrected")
        parts += [f"{k}={v}" for k, v in self.extra]
        return " ".join(parts)


DEFAULT = QuantConfig(format="qoperator", fp32_convs=3, bias_correction=True, method="minmax")


class ArrayReader(CalibrationDataReader):
    """Feeds preprocessed calibration images [N,3,S,S] to the calibrator, `batch` at a time.

    `set_range` (in batches) is what onnxruntime's strided calibration calls between chunks.
    """

    def __init__(self, input_name: str, images: np.ndarray, batch: int = 16):
        self.input_name = input_name
        self.images = np.asarray(images, dtype=np.float32)
        self.batch = batch
        self._start, self._end = 0, len(self)
        self._it: Iterator[dict] | None = None

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, end_index
        self._it = None

    def _gen(self) -> Iterator[dict]:
        for b in range(self._start, min(self._end, len(self))):
            yield {self.input_name: self.images[b * self.batch:(b + 1) * self.batch]}

    def get_next(self) -> dict | None:
        if self._it is None:
            self._it = self._gen()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def calibration_sample(domains: dict[str, Sequence[Path]], n: int, seed: int = 0) -> list[Path]:
    """About `n` images spread evenly over the domains (a smaller domain gives all it has), seeded."""
    rng = np.random.default_rng(seed)
    names = sorted(domains)
    quota = {d: 0 for d in names}
    left = n
    # Water-filling: share what is left equally among domains that still have images to give.
    while left > 0:
        open_ = [d for d in names if quota[d] < len(domains[d])]
        if not open_:
            break
        share = max(1, left // len(open_))
        for d in open_:
            take = min(share, len(domains[d]) - quota[d], left)
            quota[d] += take
            left -= take
            if left <= 0:
                break
    picked: list[Path] = []
    for d in names:
        files = list(domains[d])
        idx = rng.choice(len(files), size=quota[d], replace=False) if quota[d] else []
        picked += [Path(files[i]) for i in sorted(idx)]
    return picked


def nodes_to_keep(model_path: Path, fp32_convs: int, op_types: Sequence[str] = (),
                  tail_convs: int = 0) -> list[str]:
    """Names of the nodes left in fp32: the graph prefix through the `fp32_convs`-th Conv (and the
    activation right after it), the graph suffix from the `tail_convs`-th last Conv on, plus every
    node of the given op types."""
    model = onnx.load(str(model_path))
    names: list[str] = []
    seen = 0
    nodes = list(model.graph.node)  # onnx graphs are stored in topological order
    for i, n in enumerate(nodes):
        if seen >= fp32_convs:
            break
        names.append(n.name)
        if n.op_type == "Conv":
            seen += 1
            if seen == fp32_convs and i + 1 < len(nodes) and nodes[i + 1].op_type in ("Clip", "Relu") \
                    and nodes[i + 1].input[0] == n.output[0]:
                names.append(nodes[i + 1].name)
    if tail_convs:
        convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
        start = convs[-min(tail_convs, len(convs))]
        names += [n.name for n in nodes[start:] if n.name not in names]
    names += [n.name for n in nodes if n.op_type in set(op_types) and n.name not in names]
    return names


def _divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def prepare(fp32_path: Path, out_path: Path) -> Path:
    """quant_pre_process: shape inference + onnxruntime's basic fusions, as the docs advise.

    ONNX's own shape inference is enough here (only the batch dimension is dynamic); onnxruntime's
    symbolic one does not read opset-18 ReduceL2 axes and gives up on the normalisation.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def quantize_int8(fp32_path: Path, out_path: Path, calib_images: np.ndarray,
                  config: QuantConfig = DEFAULT, batch: int = 16) -> Path:
    """Write the int8 model for `fp32_path` to `out_path`, calibrated on `calib_images`."""
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    calib_images = np.asarray(calib_images, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="uem-quant-") as tmp:
        pre = prepare(fp32_path, Path(tmp) / "pre.onnx")
        exclude = nodes_to_keep(pre, config.fp32_convs, config.keep_fp32, config.fp32_tail_convs)
        if config.bias_correction:
            bias_correct(pre, Path(tmp) / "corrected.onnx", calib_images, config.per_channel, skip=set(exclude))
            pre = Path(tmp) / "corrected.onnx"
        extra = {"CalibTensorRangeSymmetric": False, **dict(config.extra)}
        if config.method != "minmax":
            # Histogram calibrators keep every activation of every image until they build the
            # histograms: feed one image per batch and let them fold in `stride` images at a time.
            batch = 1
            extra.setdefault("CalibStridedMinMax", _divisor_at_most(len(calib_images), 32))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs every node at INFO
        try:  # the histogram calibrators print their progress on stdout
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                quantize_static(
                    str(pre), str(out_path), ArrayReader(input_name, calib_images, batch),
                    quant_format=_FORMATS[config.format], per_channel=config.per_channel,
                    reduce_range=config.reduce_range, activation_type=_TYPES[config.activation],
                    weight_type=_TYPES[config.weight], nodes_to_exclude=exclude or None,
                    calibrate_method=_METHODS[config.method], extra_options=extra,
                    calibration_providers=["CPUExecutionProvider"])
        finally:
            root.setLevel(level)
    return out_path
