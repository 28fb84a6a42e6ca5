"""The encoder: EfficientNet-Lite0 trunk + projection head, output L2-normalised.

Split in two so training can freeze (and cache) the early part: `trunk` = stem + blocks
[0, freeze_blocks), `top` = the remaining blocks, the 1280-d head conv, average pool and projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FEATURE_DIM, EfficientNetLite0, load_pretrained
from .config import ModelConfig


class ProjectionHead(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """image (N, 3, S, S) normalised -> embedding (N, D), unit length."""

    def __init__(self, cfg: ModelConfig, backbone: EfficientNetLite0 | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone or EfficientNetLite0()
        self.head = ProjectionHead(FEATURE_DIM, cfg.head_hidden, cfg.embed_dim)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.stem(x)
        return self.backbone._blocks[: self.cfg.freeze_blocks](x)

    def top(self, h: torch.Tensor) -> torch.Tensor:
        h = self.backbone._blocks[self.cfg.freeze_blocks:](h)
        pooled = self.backbone.head(h).mean(dim=(2, 3))
        return F.normalize(self.head(pooled), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(x))

    def frozen_modules(self) -> list[nn.Module]:
        """Modules kept at their ImageNet weights (BatchNorm statistics included)."""
        b = self.backbone
        return [b._conv_stem, b._bn0, b._fc, *b._blocks[: self.cfg.freeze_blocks]]

    def trainable_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for m in self.frozen_modules() for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]


def build_encoder(cfg: ModelConfig, pretrained: bool = True) -> Encoder:
    """A fresh encoder; the backbone starts from ImageNet unless `pretrained=False` (tests)."""
    return Encoder(cfg, load_pretrained() if pretrained else EfficientNetLite0())
