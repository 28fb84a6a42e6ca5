"""Pictures placed on backdrops: the pieces the wild-query benchmark (uem.eval.wild) and training's
placed views (uem.train.placement) both build from.

Why a module of its own: training must not depend on the benchmark, and a change here changes both
the benchmark's copies and the cached training views, so it carries its own VERSION (part of the
training cache's fingerprint). The photographs come from scikit-image's sample pictures (the
package is found, not imported); each user picks its own disjoint set of them.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from ..engine.errors import UemError

VERSION = 1  # of these helpers' output for the same inputs and random state


def _sample_folder() -> Path:
    """scikit-image's folder of sample pictures (the package is found, not imported); UemError when
    scikit-image is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise UemError("backdrops from photographs need scikit-image's sample photographs: pip install 'uem[eval]'")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def texture_files(names: Sequence[str]) -> list[Path]:
    """scikit-image's sample photographs `names`; UemError when scikit-image or one of them is
    missing."""
    folder = _sample_folder()
    files = [folder / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UemError(f"scikit-image lacks the sample photographs {', '.join(missing)} in {folder}")
    return files


@functools.lru_cache(maxsize=4)
def texture_images(names: tuple[str, ...]) -> tuple[Image.Image, ...]:
    """scikit-image sample pictures by file name, decoded to RGB once per process."""
    out = []
    for path in texture_files(names):
        with Image.open(path) as im:
            out.append(im.convert("RGB"))
    return tuple(out)


def texture_crop(textures: Sequence[Image.Image], w: int, h: int, rng: np.random.Generator,
                 low: float) -> Image.Image:
    """A random square crop (low..1 of the shorter side) of a random one of `textures`, at w x h."""
    tex = textures[int(rng.integers(len(textures)))]
    side = min(tex.size)
    crop = int(side * rng.uniform(low, 1.0))
    x, y = int(rng.integers(tex.width - crop + 1)), int(rng.integers(tex.height - crop + 1))
    return tex.crop((x, y, x + crop, y + crop)).resize((w, h), Image.Resampling.BILINEAR)


def cut_out(im: Image.Image) -> Image.Image:
    """An RGB-on-white picture -> RGBA whose white surroundings (connected to the border) are clear;
    white inside the drawing (eyes, letters) stays opaque."""
    from scipy import ndimage

    rgb = im.convert("RGB")
    near_white = np.asarray(rgb).min(axis=2) >= 245
    labels, _ = ndimage.label(near_white)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    outside = np.isin(labels, edge[edge > 0])
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(outside, 0, 255).astype(np.uint8), "L"))
    return rgba


def compose(content: Image.Image, canvas: Image.Image, rng: np.random.Generator,
            scale: tuple[float, float] = (0.55, 0.85), max_rotation: float = 8.0) -> Image.Image:
    """`content` (RGBA) rotated, scaled so its longer side is `scale` of the canvas's shorter side,
    and pasted at a random place inside `canvas` (changed in place and returned)."""
    box = content.getchannel("A").getbbox()
    if box is not None:
        content = content.crop(box)
    if max_rotation:
        content = content.rotate(float(rng.uniform(-max_rotation, max_rotation)), Image.Resampling.BICUBIC,
                                 expand=True)
    w, h = canvas.size
    f = rng.uniform(*scale) * min(w, h) / max(content.size)
    content = content.resize((max(1, round(content.width * f)), max(1, round(content.height * f))),
                             Image.Resampling.LANCZOS)
    x = int(rng.integers(0, max(0, w - content.width) + 1))
    y = int(rng.integers(0, max(0, h - content.height) + 1))
    canvas.paste(content, (x, y), content)
    return canvas


def gradient(w: int, h: int, a: np.ndarray, b: np.ndarray, rng: np.random.Generator,
             noise: float) -> Image.Image:
    """A linear gradient from colour a to b at a random angle, with Gaussian noise of sd `noise`."""
    angle = rng.uniform(0, 2 * np.pi)   # float32 throughout: the same pixels under numpy 1.x and 2.x
    t = np.float32(np.cos(angle)) * np.arange(w, dtype=np.float32)[None, :] / np.float32(w) \
        + np.float32(np.sin(angle)) * np.arange(h, dtype=np.float32)[:, None] / np.float32(h)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = a + t[..., None] * (b - a) + rng.normal(0, noise, (h, w, 3)).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def random_colour(rng: np.random.Generator) -> np.ndarray:
    hue_mix = rng.dirichlet([1.0, 1.0, 1.0])
    return (40 + 200 * hue_mix / hue_mix.max() * rng.uniform(0.3, 1.0)).astype(np.float32)


def place(content: Image.Image, long_side: int, backdrop: Callable[[int, int], Image.Image],
          rng: np.random.Generator, scale: tuple[float, float] = (0.55, 0.85),
          max_rotation: float = 8.0) -> Image.Image:
    """`content` (RGB on white) cut out and placed (`compose`) on `backdrop(w, h)`, a canvas of a
    random aspect between 3:4 and 4:3 whose longer side is `long_side`; a third of the time slightly
    blurred. The random draws come in this order: aspect, backdrop, placing, blur."""
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    canvas = compose(cut_out(content), backdrop(w, h), rng, scale, max_rotation)
    if rng.random() < 1 / 3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    return canvas
