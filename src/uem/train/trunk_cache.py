"""The frozen trunk's outputs, computed once per image and view, kept in memory as float16.

The trunk (stem + the first `freeze_blocks` MBConv blocks, BatchNorm in eval mode) never changes
during training, so its output for a given augmented view never changes either. We compute it for
view 0 = the clean image and views 1..V = random augmentations (each seeded by (seed, view, image),
so the cache does not depend on batch order), and training then runs only the top part on it.

Tensor layout: float16 (V + 1, N, C, H, W). Optionally saved in the run dir for --resume.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..engine.framing import VERSION as FRAMING_VERSION
from ..engine.preprocess import PreprocessSpec, normalize
from ..datasets.backdrops import VERSION as BACKDROPS_VERSION
from .augment import VERSION as AUGMENT_VERSION
from .augment import AugmentConfig, augment
from .data import ImageSet
from .model import EncoderNet
from .run import save_torch_atomic

CACHE = "trunk_cache.pt"


def view_pixels(images: ImageSet, idx: np.ndarray, view: int, aug: AugmentConfig, seed: int,
                spec: PreprocessSpec | None = None) -> np.ndarray:
    """uint8 (len(idx), S, S, 3): view 0 is the picture itself, others seeded augmentations
    (placed views framed as `spec` frames a query)."""
    if view == 0:
        return images.pixels[idx]
    return np.stack([augment(images.pixels[i], aug, np.random.default_rng([seed, view, int(i)]), spec)
                     for i in idx])


@torch.no_grad()
def compute(encoder: EncoderNet, images: ImageSet, views: int, aug: AugmentConfig, seed: int,
            spec: PreprocessSpec, device: torch.device, batch: int | None = None, progress=None,
            shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """Trunk outputs for view 0 (clean) and `views` augmented views of every image.

    shard = (rank, world): only every world-th (view, batch) job, starting at `rank`, is computed;
    the other entries stay 0, and summing the ranks' tensors gives the whole cache (multi-process)."""
    encoder.eval()
    # 128 pictures a batch; the line-art view doubles what the trunk sees, so halve it (peak memory
    # of the early blocks' activations grows with the batch; the cache itself does not depend on it)
    batch = batch or max(1, 128 // encoder.views)
    n = len(images)
    jobs = [(v, np.arange(s, min(s + batch, n))) for v in range(views + 1) for s in range(0, n, batch)]
    rank, world = shard
    jobs = jobs[rank::world] or [(0, np.arange(0, 0))]  # a rank without jobs still learns the shape
    out: torch.Tensor | None = None
    # Augmenting the next batch (numpy/PIL) overlaps with the trunk on the current one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(view_pixels, images, jobs[0][1], jobs[0][0], aug, seed, spec)
        for k, (v, idx) in enumerate(jobs):
            pix = pending.result()
            if k + 1 < len(jobs):
                pending = pool.submit(view_pixels, images, jobs[k + 1][1], jobs[k + 1][0], aug, seed, spec)
            x = torch.from_numpy(normalize(pix, spec)).to(device)
            h = encoder.trunk(x).to(torch.float16).cpu()
            if out is None:
                alloc = torch.empty if world == 1 else torch.zeros
                out = alloc((views + 1, n, *h.shape[1:]), dtype=torch.float16)
            if len(idx):
                out[v, idx[0]: idx[-1] + 1] = h
            if progress is not None:
                progress(len(idx))
    assert out is not None
    return out


def fingerprint(images: ImageSet, views: int, aug: AugmentConfig, seed: int, spec: PreprocessSpec,
                freeze_blocks: int) -> str:
    """What the cache depends on: the pixels, the views and the frozen part of the model."""
    h = hashlib.sha256()
    h.update(json.dumps([views, seed, spec.to_dict(), freeze_blocks, repr(aug), AUGMENT_VERSION,
                         FRAMING_VERSION, BACKDROPS_VERSION]).encode())
    h.update(images.pixels.tobytes())
    h.update(images.domain.tobytes())
    return h.hexdigest()


def load(run_dir: Path, key: str) -> torch.Tensor | None:
    path = Path(run_dir) / CACHE
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a damaged cache is simply recomputed
        return None
    return obj["features"] if obj.get("key") == key else None


def save(run_dir: Path, key: str, features: torch.Tensor) -> None:
    save_torch_atomic({"key": key, "features": features}, Path(run_dir) / CACHE)


@torch.no_grad()
def advance(encoder: EncoderNet, feats: torch.Tensor, from_blocks: int, batch: int = 512) -> torch.Tensor:
    """A cache for a later freeze point from one for an earlier point: run the frozen blocks
    [from_blocks, encoder.cfg.freeze_blocks) (eval mode) over it. Float16 in, float16 out."""
    blocks = encoder.backbone._blocks[from_blocks: encoder.cfg.freeze_blocks].eval()
    views = encoder.views  # views sit side by side in channels (EncoderNet.trunk)
    flat = feats.reshape(-1, feats.shape[2] // views, *feats.shape[3:])
    out = torch.cat([blocks(flat[i:i + batch].float()).to(torch.float16) for i in range(0, len(flat), batch)])
    return out.reshape(*feats.shape[:2], views * out.shape[1], *out.shape[2:])
