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


def init_linear_head(head: nn.Linear, pooled: torch.Tensor, groups: torch.Tensor) -> None:
    """Start a linear head at the PCA of `pooled` (N, 1280): the top principal directions of the
    features centred within each group (domain), so the first directions describe content rather
    than the domain; the bias centres on the overall mean. Nothing here reads a label."""
    x = pooled.double()
    centred = x.clone()
    for g in groups.unique():
        rows = groups == g
        centred[rows] -= x[rows].mean(0)
    cov = centred.T @ centred / max(len(x) - 1, 1)
    vals, vecs = torch.linalg.eigh(cov)                    # ascending eigenvalues
    vals = vals[-head.out_features:].flip(0)
    w = vecs[:, -head.out_features:].flip(1).T              # (D, 1280), largest first
    # An eigenvector's sign (and any direction of a zero eigenvalue) is arbitrary: it may differ
    # between LAPACK builds and thread counts. Make the largest component of each direction positive,
    # and give directions without variance (fewer images than dimensions) zero weights.
    w = w * torch.sign(w.gather(1, w.abs().argmax(1, keepdim=True)))
    w[vals <= 1e-6 * vals[0].clamp_min(1e-30)] = 0.0
    with torch.no_grad():
        head.weight.copy_(w.to(head.weight.dtype))
        head.bias.copy_((-(w @ x.mean(0))).to(head.bias.dtype))


class Encoder(nn.Module):
    """image (N, 3, S, S) normalised -> embedding (N, D), unit length."""

    def __init__(self, cfg: ModelConfig, backbone: EfficientNetLite0 | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone or EfficientNetLite0()
        if cfg.head == "linear":
            self.head: nn.Module = nn.Linear(FEATURE_DIM, cfg.embed_dim)
        elif cfg.head == "mlp":
            self.head = ProjectionHead(FEATURE_DIM, cfg.head_hidden, cfg.embed_dim)
        else:
            raise ValueError(f"unknown head {cfg.head!r} (linear or mlp)")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.stem(x)
        return self.backbone._blocks[: self.cfg.freeze_blocks](x)

    def pooled(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk output -> the 1280-d average-pooled backbone features under the head."""
        h = self.backbone._blocks[self.cfg.freeze_blocks:](h)
        return self.backbone.head(h).mean(dim=(2, 3))

    def top(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.pooled(h)), dim=1)

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
