"""The floor: retrieval with no training at all, the reference every benchmark compares against.

ImageNet EfficientNet-Lite0 (backbone.load_pretrained), its global-average-pooled 1280-d features,
cosine; 224 px input letter-boxed whole (the definition the benchmark sets' floor tables were
measured with; `framing="content"` shows what content framing alone gives the untrained network).
`REFERENCE` is docs/benchmarks.md's floor table for emoji3 (benchmarks/floor.py must reproduce it);
`cached_embed_fn` keeps computed vectors on disk, keyed by file content. numpy at import time.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np

# The floor table of docs/benchmarks.md, "The floor" (the reference benchmarks/floor.py must reproduce).
REFERENCE = {
    "twemoji->openmoji": {"top1_identity": 0.266, "map": 0.213},
    "twemoji->notomono": {"top1_identity": 0.124, "map": 0.110},
    "openmoji->notomono": {"top1_identity": 0.121, "map": 0.124},
    "notomono->twemoji": {"top1_identity": 0.090, "map": 0.095},
    "notomono->openmoji": {"top1_identity": 0.086, "map": 0.099},
    "openmoji->twemoji": {"top1_identity": 0.229, "map": 0.188},
}


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


def cached_embed_fn(embed_fn, cache_dir):
    """Wrap embed_fn with an on-disk cache keyed by each file's content hash (survives data rebuilds).
    `.stats` counts the vectors read from the cache and those embedded."""
    import hashlib
    from pathlib import Path

    from ..engine.atomic import replacing

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    store = cache_dir / "vectors.npz"
    stats = {"from_cache": 0, "embedded": 0}

    def embed(paths):
        known = dict(np.load(store, allow_pickle=False)) if store.exists() else {}
        keys = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
        todo = sorted({k: p for k, p in zip(keys, paths) if k not in known}.items())
        for i in range(0, len(todo), 512):  # saved chunk by chunk: an interrupted run loses little
            chunk = todo[i:i + 512]
            fresh = embed_fn([p for _, p in chunk])
            known.update({k: v for (k, _), v in zip(chunk, fresh)})
            with replacing(store, suffix=".npz") as tmp:
                np.savez(tmp, **known)
        print(f"  {len(paths) - len(todo)} of {len(paths)} vectors from the cache", file=sys.stderr)
        stats["from_cache"] += len(paths) - len(todo)
        stats["embedded"] += len(todo)
        return np.stack([known[k] for k in keys]).astype(np.float32)

    embed.stats = stats
    return embed
