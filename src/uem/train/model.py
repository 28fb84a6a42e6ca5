"""The encoder: EfficientNet-Lite0 trunk + projection head, output L2-normalised.

Split in two so training can freeze (and cache) the early part: `trunk` = stem + blocks
[0, freeze_blocks), `top` = the read-out: for the default grid head the trunk's map in grid x grid
cells and one linear projection; for the linear / mlp heads the remaining blocks, the 1280-d head
conv, average pool and projection.

With `line_view` (the default) the network looks at every picture twice: as given, and as a line
drawing of itself (`LineArtView`, black strokes where the colour changes). Both views go through the
same weights; the embedding is the two unit-length halves side by side. A colour emoji's line
drawing looks like line art, so the line half carries shape across the colour -> line-art gap while
the colour half keeps what colour-to-colour retrieval needs (benchmarks/RESULTS-archive.md, "Training").
The view is a layer of the network, so the ONNX model computes it and the engine's preprocessing
stays the single implementation.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FEATURE_DIM, LITE0_STAGES, EfficientNetLite0, load_pretrained
from .config import ModelConfig


class ProjectionHead(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LineArtView(nn.Module):
    """A normalised picture -> the same picture drawn as black strokes on white, normalised.

    A pixel is a stroke where any channel differs from its upper or left neighbour by more than
    `threshold` (0-255 units): colour-region borders and silhouettes, the way line art draws them.
    Strokes are then thickened by `thicken` pixels (a max filter), closer to a pen's width. No
    parameters; exported to ONNX as Slice/Sub/Abs/Max/MaxPool/Greater ops."""

    def __init__(self, mean, std, threshold: float = 30.0, thicken: int = 1):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.threshold = float(threshold)
        self.thicken = int(thicken)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pix = (x * self.std + self.mean) * 255.0
        gy = F.pad((pix[:, :, 1:, :] - pix[:, :, :-1, :]).abs(), (0, 0, 1, 0))
        gx = F.pad((pix[:, :, :, 1:] - pix[:, :, :, :-1]).abs(), (1, 0, 0, 0))
        stroke = (torch.maximum(gx, gy).amax(dim=1, keepdim=True) > self.threshold).to(x.dtype)
        if self.thicken > 0:
            k = 2 * self.thicken + 1
            stroke = F.max_pool2d(stroke, k, stride=1, padding=self.thicken)
        return ((1.0 - stroke) - self.mean) / self.std  # white (1) background, black (0) strokes


def principal_directions(x: np.ndarray, groups: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The top `n` principal directions of `x` (N, F) centred within each group, as rows (n, F),
    largest first, with their variances (n,). Rows beyond the data's rank are zero.

    Computed as the SVD of the centred data in float64, never as the eigendecomposition of its
    covariance: a covariance of fewer images than dimensions, or of byte-identical images, has
    hundreds of repeated zero eigenvalues, and LAPACK's divide-and-conquer eigh then fails to
    converge on some CPUs (seen on AVX-512 builds). gesdd falls back to gesvd (slower, always
    converges); neither forms the covariance, so its conditioning never matters.

    Deterministic across CPUs and thread counts up to rounding: a direction's sign is arbitrary in
    any decomposition, so the largest component of each is made positive, and directions without
    variance (their basis is arbitrary) are zero."""
    x = np.asarray(x, dtype=np.float64)
    groups = np.asarray(groups)
    if x.ndim != 2 or len(groups) != len(x):
        raise ValueError(f"expected (N, F) features and N groups, got {x.shape} and {groups.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("features must be finite")
    centred = x.copy()
    for g in np.unique(groups):
        rows = groups == g
        centred[rows] -= x[rows].mean(0)
    try:
        _, s, vt = scipy.linalg.svd(centred, full_matrices=False, lapack_driver="gesdd")
    except (np.linalg.LinAlgError, ValueError):
        _, s, vt = scipy.linalg.svd(centred, full_matrices=False, lapack_driver="gesvd")
    var = s ** 2 / max(len(x) - 1, 1)
    w = np.zeros((n, x.shape[1]))
    vals = np.zeros(n)
    m = min(n, len(s))
    w[:m], vals[:m] = vt[:m], var[:m]
    w *= np.sign(w[np.arange(n), np.abs(w).argmax(1)])[:, None]
    w[vals <= 1e-6 * max(vals[0], 1e-30)] = 0.0
    w[vals <= 0] = 0.0
    return w, vals


def init_linear_head(head: nn.Linear, features: torch.Tensor, groups: torch.Tensor) -> None:
    """Start a linear head at the PCA of `features` (N, F), the features under it
    (`EncoderNet.head_input`): the top principal directions of the features centred within each
    group (domain), so the first directions describe content rather than the domain; the bias
    centres on the overall mean. Nothing here reads a label."""
    x = features.detach().cpu().double().numpy()
    w, _ = principal_directions(x, groups.detach().cpu().numpy(), head.out_features)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w).to(head.weight.dtype))
        head.bias.copy_(torch.from_numpy(-(w @ x.mean(0))).to(head.bias.dtype))


def trunk_channels(freeze_blocks: int) -> int:
    """Channels of the trunk's output: those of MBConv block freeze_blocks - 1 (the stem's 32 at 0)."""
    if freeze_blocks <= 0:
        return 32
    outs = [cout for repeats, _, _, _, _, cout in LITE0_STAGES for _ in range(repeats)]  # one per block
    return outs[freeze_blocks - 1]


class EncoderNet(nn.Module):
    """image (N, 3, S, S) normalised -> embedding (N, D), unit length: the torch network that
    training updates and export turns into ONNX (the runtime's onnxruntime session over that ONNX
    is `uem.engine.encoder.Encoder`).

    head "grid" (the default) reads the trunk's output map itself: each view's map average-pooled
    to grid x grid cells, flattened, unit length, then one Linear layer (started at the PCA,
    `init_linear_head`), unit length, the views side by side. Nothing after the trunk but that
    layer: the pretrained blocks 14-15 and the 1280-d head conv are not part of the embedding.

    head "pooled" is the untrained read-out: no layer after the trunk, the embedding is each view's
    average-pooled trunk output (MBConv block freeze_blocks - 1), unit length, side by side. On
    emoji3 the pooled block-13 output carries more cross-style identity than the 1280-d head
    (benchmarks/RESULTS.md, "Aligned retrieval"); `uemctl export --pretrained` builds bundles on it.
    """

    def __init__(self, cfg: ModelConfig, backbone: EfficientNetLite0 | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone or EfficientNetLite0()
        self.views = 2 if cfg.line_view else 1
        if cfg.embed_dim % self.views:
            raise ValueError(f"embed_dim {cfg.embed_dim} must be even with the line-art view")
        out = cfg.embed_dim // self.views  # each view's half of the embedding
        self.line_view = LineArtView(cfg.preprocess().mean, cfg.preprocess().std) if cfg.line_view else None
        if cfg.head == "grid":
            self.head: nn.Module = nn.Linear(trunk_channels(cfg.freeze_blocks) * cfg.grid ** 2, out)
        elif cfg.head == "linear":
            self.head = nn.Linear(FEATURE_DIM, out)
        elif cfg.head == "mlp":
            self.head = ProjectionHead(FEATURE_DIM, cfg.head_hidden, out)
        elif cfg.head == "pooled":
            channels = trunk_channels(cfg.freeze_blocks)
            if out != channels:
                raise ValueError(f"the pooled read-out of block {cfg.freeze_blocks - 1} has "
                                 f"{channels} channels per view, embed_dim says {out}")
            self.head = nn.Identity()
        else:
            raise ValueError(f"unknown head {cfg.head!r} (grid, linear, mlp or pooled)")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, views * C, H, W): the views' trunk outputs side by side in channels,
        so a cache of trunk outputs is indexed the same way with or without the line-art view."""
        n = x.shape[0]
        if self.line_view is not None:
            x = torch.cat([x, self.line_view(x)])  # one pass over both views (one set of ONNX convs)
        h = self.backbone._blocks[: self.cfg.freeze_blocks](self.backbone.stem(x))
        # slices, not chunk(): they keep the batch dimension symbolic in the ONNX export
        return torch.cat([h[:n], h[n:]], dim=1) if self.views > 1 else h

    def _per_view(self, h: torch.Tensor) -> torch.Tensor:
        """(N, views * C, H, W) -> (views * N, C, H, W): all first views, then all line-art views."""
        if self.views > 1:
            c = h.shape[1] // 2
            h = torch.cat([h[:, :c], h[:, c:]])
        return h

    def grid_cells(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk output (N, views * C, H, W) -> what the grid head reads, (views * N, C * grid^2):
        each view's map average-pooled to grid x grid cells (a fixed kernel: exported as AveragePool),
        flattened, unit length."""
        h = self._per_view(h)
        k = h.shape[-1] // self.cfg.grid
        if k > 1:
            h = F.avg_pool2d(h, k)
        return F.normalize(h.flatten(1), dim=1)

    def head_input(self, h: torch.Tensor) -> torch.Tensor:
        """Trunk output (N, views * C, H, W) -> the features under the head, (views * N, F): all
        first views, then all line-art views. For the linear and mlp heads the 1280-d average-pooled
        backbone features; for the grid head its cells (`grid_cells`). The "pooled" head has no
        layer and reads none of this (`top`)."""
        if self.cfg.head == "grid":
            return self.grid_cells(h)
        h = self.backbone._blocks[self.cfg.freeze_blocks:](self._per_view(h))
        return self.backbone.head(h).mean(dim=(2, 3))

    def top(self, h: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        if self.cfg.head == "pooled":
            z = F.normalize(self._per_view(h).mean(dim=(2, 3)), dim=1)
        else:
            z = F.normalize(self.head(self.head_input(h)), dim=1)
        if self.views == 1:
            return z
        return F.normalize(torch.cat([z[:n], z[n:]], dim=1), dim=1)  # each half 1/sqrt(2) long

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.trunk(x))

    def frozen_modules(self) -> list[nn.Module]:
        """Modules kept at their ImageNet weights (BatchNorm statistics included). For the grid and
        pooled read-outs that includes the blocks after the trunk and the 1280-d head conv: they are
        not part of the embedding (and DDP refuses parameters that never get a gradient)."""
        b = self.backbone
        unused = [*b._blocks[self.cfg.freeze_blocks:], b._conv_head, b._bn1] if self.cfg.head in ("grid", "pooled") else []
        return [b._conv_stem, b._bn0, b._fc, *b._blocks[: self.cfg.freeze_blocks], *unused]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What the optimiser updates: everything not frozen (for the grid head: the head alone)."""
        frozen = {id(p) for m in self.frozen_modules() for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in frozen]


def build_encoder(cfg: ModelConfig, pretrained: bool = True) -> EncoderNet:
    """A fresh encoder; the backbone starts from ImageNet unless `pretrained=False` (tests)."""
    return EncoderNet(cfg, load_pretrained() if pretrained else EfficientNetLite0())
