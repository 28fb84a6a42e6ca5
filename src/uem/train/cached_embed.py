"""Embeddings of cached trunk outputs (uem.train.trunk_cache): what the trainer, its stages, the tests and
the benchmarks compute from a cache without running the frozen trunk again. Eval mode, no grad."""

from __future__ import annotations

import torch

from .model import EncoderNet


@torch.no_grad()
def _over_cache(fn, encoder: EncoderNet, feats: torch.Tensor, device: torch.device, batch: int) -> list[torch.Tensor]:
    """fn(batch of cached trunk outputs) for every batch of `feats`, the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    out = [fn(feats[i:i + batch].to(device).float()) for i in range(0, len(feats), batch)]
    encoder.train(was_training)
    return out


def embed_cached(encoder: EncoderNet, feats: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """Embeddings (N, D) float32 of cached trunk outputs (N, C, H, W), eval mode."""
    return torch.cat(_over_cache(encoder.top, encoder, feats, device, batch))


def head_inputs_cached(encoder: EncoderNet, feats: torch.Tensor, device: torch.device,
                       batch: int = 256) -> torch.Tensor:
    """The features under the head (views * N, F) of cached trunk outputs, eval mode: all first
    views, then all line-art views (EncoderNet.head_input: the grid cells, or the 1280-d
    average-pooled features)."""
    parts = _over_cache(lambda h: encoder.head_input(h).reshape(encoder.views, len(h), -1), encoder, feats,
                        device, batch)
    return torch.cat(parts, dim=1).reshape(-1, parts[0].shape[-1])


