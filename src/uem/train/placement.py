"""Framing augmentation: a training picture moved, scaled and rotated onto a backdrop, then framed
by the engine's own preprocessing, exactly as a user's picture of it would be.

Why: a query is a user's picture, not an indexed one (eval/wild.py measures this). Content framing
(uem.engine.framing) undoes a plain backdrop and the placement, but not a busy backdrop, a
rotation, a blur or the halo a cut-out leaves; so training shows the encoder those views as the
query path produces them, and the mined pairs then teach invariance to them, not only to style.

The backdrops are synthetic (white, flat colours, gradients, smooth colour fields, stripes, all
with sensor noise) and, with `photos`, also crops of scikit-image sample pictures tinted with a
random colour (TRAIN_TEXTURES: a camera man, coins, the moon, a page, text, a cell, a clock, a
retina, the Hubble deep field, a stained tissue): never the photographs the wild benchmark cuts
its backgrounds from (eval/wild.py TEXTURES; tests/test_placement.py checks the two are disjoint).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..datasets.backdrops import gradient, place, random_colour, texture_crop, texture_images
from ..engine.preprocess import PreprocessSpec, square_pixels

BACKDROPS = ("white", "flat", "gradient", "field", "stripes")
TRAIN_TEXTURES = ("camera.png", "coins.png", "moon.png", "page.png", "text.png", "cell.png",
                  "clock_motion.png", "retina.jpg", "hubble_deep_field.jpg", "ihc.png")


def photo_backdrop(w: int, h: int, rng: np.random.Generator) -> Image.Image:
    """A random crop of a training texture, tinted with a random colour, at w x h."""
    crop = texture_crop(texture_images(TRAIN_TEXTURES), w, h, rng, 0.3)
    a = np.asarray(crop, np.float32)
    tint = random_colour(rng) / 255.0 if rng.random() < 0.5 else np.ones(3, np.float32)
    return Image.fromarray(np.clip(a * tint * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8), "RGB")


def synthetic_backdrop(w: int, h: int, rng: np.random.Generator, photos: bool = False) -> Image.Image:
    """One of BACKDROPS (or, with `photos`, a photo texture as often as each of them) at w x h."""
    n = len(BACKDROPS) + int(photos)
    pick = int(rng.integers(n))
    if pick == len(BACKDROPS):
        return photo_backdrop(w, h, rng)
    kind = BACKDROPS[pick]
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
                scale: tuple[float, float] = (0.35, 0.95), photos: bool = False,
                spec: PreprocessSpec | None = None) -> np.ndarray:
    """uint8 (S, S, 3) on white -> the same picture placed on a synthetic backdrop and preprocessed
    as a query of a bundle with `spec` would be (content framing unless the spec letter-boxes, then
    the letter-box at its resampling): uint8 (S, S, 3)."""
    size = pixels.shape[0]
    canvas = place(Image.fromarray(pixels), int(size * rng.uniform(1.5, 2.5)),
                   lambda w, h: synthetic_backdrop(w, h, rng, photos), rng, scale, rotate_deg)
    return square_pixels(canvas, spec or PreprocessSpec(size=size))
