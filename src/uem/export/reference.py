"""The yardstick a query's cost is compared with: the plain ImageNet EfficientNet-Lite0, whole.

Why: uem's encoder stops at block 13 and is int8, but it looks at every picture twice (the picture and
its line drawing), then the engine frames, searches and decides. "Is a uem query cheaper than simply
running the network it started from?" is the question an edge deployment asks, so `uemctl bench`
times this model (stem, 16 MBConv blocks, 1280-d head conv, pooling, 1000-way classifier; fp32, no
quantization) through the same onnxruntime session setup at the bundle's input size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..train.backbone import load_pretrained
from .onnx import export_onnx


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = load_pretrained().eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.classify(x)


def plain_network_onnx(path: Path, size: int) -> Path:
    """Write the whole ImageNet Lite0 classifier as fp32 ONNX taking (N, 3, size, size)."""
    return export_onnx(_Classifier(), Path(path), size)
