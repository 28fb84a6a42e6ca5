"""Preprocessing many images for export, where one unreadable image must not stop the export."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..engine.errors import ImageError
from ..engine.preprocess import PreprocessSpec, preprocess_batch


def preprocess_tolerant(paths: Sequence[Path], spec: PreprocessSpec) -> tuple[np.ndarray, list[int], list[str]]:
    """Preprocess a chunk; unreadable images are skipped (returned by path), not fatal."""
    try:
        return preprocess_batch(paths, spec), list(range(len(paths))), []
    except ImageError:
        keep, bad, arrays = [], [], []
        for i, p in enumerate(paths):
            try:
                arrays.append(preprocess_batch([p], spec))
                keep.append(i)
            except ImageError:
                bad.append(str(p))
        x = np.concatenate(arrays) if arrays else np.zeros((0, 3, spec.size, spec.size), np.float32)
        return x, keep, bad
