"""The floor: retrieval with no training at all, the reference every benchmark compares against.

ImageNet EfficientNet-Lite0 (backbone.load_pretrained), its global-average-pooled 1280-d features,
cosine; 224 px input letter-boxed whole (the definition the benchmark sets' floor tables were
measured with; `framing="content"` shows what content framing alone gives the untrained network).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np


def floor_embed_fn(batch_size: int = 32, size: int = 224, framing: str = "letterbox",
                   progress: bool = True) -> Callable[[list], np.ndarray]:
    """paths -> float32 [N, 1280]: the global-average-pooled features of the ImageNet
    EfficientNet-Lite0 (its own forward, not the "pooled" read-out of a run), no grad."""
    import torch

    from ..engine.preprocess import PreprocessSpec, preprocess_batch
    from .backbone import load_pretrained

    spec = PreprocessSpec(size=size, framing=framing)
    model = load_pretrained().eval()

    def embed(paths):
        out = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(paths), batch_size):
                x = torch.from_numpy(preprocess_batch(paths[i:i + batch_size], spec))
                out.append(model(x).numpy())
                if progress:
                    print(f"\r  {min(i + batch_size, len(paths))}/{len(paths)} images, "
                          f"{time.perf_counter() - t0:.0f} s", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1280), np.float32)

    return embed
