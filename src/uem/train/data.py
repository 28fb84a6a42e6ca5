"""Training data: every image of every domain, decoded once into memory as uint8 squares.

Files come from `uem.datasets.folders.scan` (file lists only); nothing below a domain folder is read
except the image bytes. Images are indexed globally 0..N-1 in scan order (domain by domain); each
image also has its domain index and its slot in that domain's memory bank.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..datasets.folders import scan
from ..engine.preprocess import PreprocessSpec, square_pixels


@dataclass
class ImageSet:
    domains: list[str]
    paths: list[Path]        # N, scan order
    pixels: np.ndarray       # uint8 (N, S, S, 3)
    domain: np.ndarray       # int64 (N,), index into `domains`
    slot: np.ndarray         # int64 (N,), position inside its domain (= memory bank row)

    def __len__(self) -> int:
        return len(self.paths)

    def members(self, d: int) -> np.ndarray:
        """Global indices of domain d's images, in slot order."""
        return np.flatnonzero(self.domain == d)

    def sizes(self) -> list[int]:
        return [int(np.sum(self.domain == d)) for d in range(len(self.domains))]


def load_images(root: str | Path, spec: PreprocessSpec, domains: list[str] | None = None,
                progress=None) -> ImageSet:
    """Decode DATA/<domain>/** (scan order) with the engine's preprocessing, up to the uint8 square."""
    files = scan(root, domains)
    names = list(files)
    paths = [p for d in names for p in files[d]]
    pixels = np.empty((len(paths), spec.size, spec.size, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        pixels[i] = square_pixels(p, spec)
        if progress is not None:
            progress(1)
    domain = np.concatenate([np.full(len(files[d]), k, dtype=np.int64) for k, d in enumerate(names)])
    slot = np.concatenate([np.arange(len(files[d]), dtype=np.int64) for d in names])
    return ImageSet(domains=names, paths=paths, pixels=pixels, domain=domain, slot=slot)
