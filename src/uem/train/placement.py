"""Framing augmentation: a training picture moved, scaled and rotated onto a backdrop, then framed
by the engine's own preprocessing, exactly as a user's picture of it would be.

Why: a query is a user's picture, not an indexed one (eval/wild.py measures this). Content framing
(uem.engine.framing) undoes a plain backdrop and the placement, but not a busy backdrop, a
rotation, a blur or the halo a cut-out leaves; so training shows the encoder those views as the
query path produces them, and the mined pairs then teach invariance to them, not only to style.

The backdrops here are synthetic (white, flat colours, gradients, smooth colour fields, stripes,
all with sensor noise): the photographs the wild benchmark cuts backgrounds from are never seen in
training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from ..engine.framing import frame_content
from ..engine.preprocess import fit_square
from ..eval.wild import compose, cut_out, gradient, random_colour

BACKDROPS = ("white", "flat", "gradient", "field", "stripes")


def synthetic_backdrop(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """One of BACKDROPS at w x h, chosen by rng."""
    kind = BACKDROPS[int(rng.integers(len(BACKDROPS)))]
    noise = float(rng.uniform(0, 8))
    if kind == "white":
        return Image.new("RGB", (w, h), (255, 255, 255))
    if kind in ("flat", "gradient"):
        a = random_colour(rng)
        return gradient(w, h, a, a if kind == "flat" else random_colour(rng), rng, noise)
    if kind == "field":  # a smooth random colour field: coarse noise, upsampled
        coarse = rng.uniform(30, 230, (int(rng.integers(2, 7)), int(rng.integers(2, 7)), 3)).astype(np.uint8)
        field = np.asarray(Image.fromarray(coarse, "RGB").resize((w, h), Image.Resampling.BICUBIC), np.float32)
    else:  # stripes of two colours at a random angle and period
        a, b = random_colour(rng), random_colour(rng)
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 40)
        t = np.cos(angle) * np.arange(w)[None, :] + np.sin(angle) * np.arange(h)[:, None]
        field = np.where((t // period) % 2 == 0, 0.0, 1.0)[..., None] * (b - a) + a
    field = field + rng.normal(0, noise, field.shape)
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), "RGB")


def placed_view(pixels: np.ndarray, rng: np.random.Generator, rotate_deg: float = 10.0,
                scale: tuple[float, float] = (0.35, 0.95)) -> np.ndarray:
    """uint8 (S, S, 3) on white -> the same picture placed on a synthetic backdrop and framed by
    the engine (frame_content + letter-box): uint8 (S, S, 3)."""
    size = pixels.shape[0]
    long_side = int(size * rng.uniform(1.5, 2.5))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    canvas = compose(cut_out(Image.fromarray(pixels)), synthetic_backdrop(w, h, rng), rng, scale, rotate_deg)
    if rng.random() < 1 / 3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return np.asarray(fit_square(frame_content(canvas, size), size), dtype=np.uint8)
