"""preprocess.normalize (the per-channel fast path) equals the plain formula bit for bit."""

import numpy as np
import pytest

from uem.engine.preprocess import PreprocessSpec, normalize


@pytest.mark.parametrize("shape", [(32, 32, 3), (1, 64, 64, 3), (4, 32, 48, 3), (2, 3, 32, 32, 3)])
def test_normalize_matches_the_formula_exactly(shape):
    spec = PreprocessSpec(size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
    pix = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    x = pix.astype(np.float32) * np.float32(1.0 / 255.0)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    want = np.moveaxis(x, -1, -3)
    got = normalize(pix, spec)
    assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, want)
