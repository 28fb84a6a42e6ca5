"""`uemctl export --dim D`: a narrower embedding, as a projection the network itself computes.

Why: every stored item costs 4 x dim bytes of vector plus its HNSW links, and the graph search's
distance computations scale with dim; a smaller bundle and a faster search can be worth a little
quality (benchmarks/RESULTS.md, "Embedding width" measures the trade at 128 / 256 / 512).

How: the full-width embeddings of a sample of the training images (spread evenly over the domains,
seeded) give the top `dim` principal directions of the embeddings centred within each domain, so the
directions kept describe content rather than which domain a picture comes from (the grid head is
started the same way, uem.train.model.init_linear_head). The encoder is then wrapped so that its
output is that projection, re-normalised: the ONNX export, the int8 quantization, the parity check
and every stored vector see one network, and a query is projected by the same graph that made the
items. Nothing here reads a label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine.preprocess import PreprocessSpec
from ..train.model import principal_directions
from .onnx import torch_embed
from .pixels import preprocess_tolerant
from .quantize import calibration_sample

SAMPLE_PER_DIM = 4      # images in the fit per kept direction (at least MIN_SAMPLE)
MIN_SAMPLE = 1000


class Projected(nn.Module):
    """`encoder`'s unit embedding (N, D) -> (N, dim): times the fixed (dim, D) matrix, unit length."""

    def __init__(self, encoder: nn.Module, directions: np.ndarray):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("directions", torch.from_numpy(np.asarray(directions, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x) @ self.directions.T, dim=1)


def sample_size(dim: int) -> int:
    return max(MIN_SAMPLE, SAMPLE_PER_DIM * int(dim))


def fit_directions(embeddings: np.ndarray, domains: Sequence[str], dim: int) -> tuple[np.ndarray, float]:
    """The top `dim` principal directions (dim, D) of `embeddings` centred per domain, and the
    share of that centred variance they keep. Raises ValueError when the sample has fewer
    independent directions than `dim`."""
    x = np.asarray(embeddings, np.float64)
    if not 1 <= dim < x.shape[1]:
        raise ValueError(f"--dim must be between 1 and the model's {x.shape[1] - 1}, got {dim}")
    # every direction at once: the SVD computes them anyway, and their variances sum to the total
    w, var = principal_directions(x, np.asarray(domains), x.shape[1])
    w = w[:dim]
    if not np.all(np.linalg.norm(w, axis=1) > 0.5):
        raise ValueError(f"the {len(x)} sample images span fewer than {dim} directions; "
                         "choose a smaller --dim or index more images")
    total = float(var.sum())
    return w.astype(np.float32), float(var[:dim].sum() / total) if total > 0 else 1.0


def project_encoder(encoder: nn.Module, pixels: np.ndarray, domains: Sequence[str],
                    dim: int) -> tuple[Projected, dict]:
    """`encoder` wrapped to output `dim` dimensions, fitted on preprocessed `pixels` (N, 3, S, S)
    of the given domains, and a record of the fit for the bundle's manifest."""
    x = torch_embed(encoder.eval(), pixels)
    directions, kept = fit_directions(x, domains, dim)
    return Projected(encoder, directions).eval(), {
        "from_dim": int(x.shape[1]), "dim": int(dim), "fit_images": int(len(x)),
        "variance_kept": round(kept, 4)}


def projected_encoder(encoder: nn.Module, train: dict[str, list[Path]], spec: PreprocessSpec, dim: int,
                      seed: int) -> tuple[Projected, dict]:
    """The encoder narrowed to `dim` (uem.export.reduce), fitted on a seeded sample of the training
    images spread over the domains (unreadable ones skipped); ValueError when the sample spans
    fewer than `dim` directions."""
    sample = calibration_sample(train, sample_size(dim), seed=seed + 2)
    domain_of = {p: d for d, files in train.items() for p in map(Path, files)}
    x, keep, _ = preprocess_tolerant(sample, spec)
    return project_encoder(encoder, x, [domain_of[sample[i]] for i in keep], dim)
