"""Wild queries: copies of a benchmark's query pictures framed the way a user's picture is.

Every benchmark query used to be an indexed picture itself, centred and scaled exactly like the rest
of the gallery. A user's screenshot or phone photo is not. `wild_copy` re-frames one picture with a
seeded transform of what a camera or a screenshot does to it:

- scale: the content's longer side is 55-85 % of the canvas's shorter side;
- position: anywhere on the canvas; aspect: the canvas is 3:4 to 4:3; rotation: up to 8 degrees;
- backdrop (VARIANTS): "reframed" keeps white; "background" puts the content on a flat colour, a
  linear gradient between two colours (both with sensor noise), or a crop of a real photograph
  (scikit-image's sample pictures: brick, grass, gravel, coffee, a cat, a rocket, an astronaut, a
  motorcycle), a third each;
- blur (a third of the pictures, radius 0.3-1.0 px), then JPEG at quality 70-92.

The gallery stays as indexed. Each picture's transform depends only on (seed, variant, its path
relative to the data folder), so a copy is the same whatever else is evaluated. Labels and
identities are the original picture's. Pictures are RGB on white (the benchmark sets'); the content
is whatever is not white and connected to the border. The cut-out, placing and backdrops are
uem.datasets.backdrops', which training's placed views use as well.
"""

from __future__ import annotations

import importlib.util
import io
import os
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..datasets.backdrops import gradient, place, random_colour, texture_crop, texture_files, texture_images
from ..engine.atomic import replace_atomic
from ..engine.errors import UemError

VARIANTS = ("reframed", "background")
VERSION = 1  # bump when a copy changes for the same seed
TEXTURES = ("brick.png", "grass.png", "gravel.png", "coffee.png", "chelsea.png", "rocket.jpg",
            "astronaut.png", "motorcycle_left.png")


def check_available() -> None:
    """Raise UemError (one line) unless what wild copies need is installed: scipy (cut-outs) and
    scikit-image's sample photographs (backgrounds); called before any copy is made."""
    if importlib.util.find_spec("scipy") is None:
        raise UemError("wild queries need scipy: pip install 'uem[eval]'")
    texture_files(TEXTURES)


def _rng(seed: int, variant: str, key: str) -> np.random.Generator:
    return np.random.default_rng([VERSION, int(seed), VARIANTS.index(variant),
                                  zlib.crc32(key.encode("utf-8"))])


def _backdrop(w: int, h: int, rng: np.random.Generator, textures: Sequence[Image.Image]) -> Image.Image:
    kind = int(rng.integers(3))
    if kind == 2:
        return texture_crop(textures, w, h, rng, 0.4)
    a = random_colour(rng)
    b = a if kind == 0 else random_colour(rng)
    return gradient(w, h, a, b, rng, float(rng.uniform(2, 8)))


def wild_copy(im: Image.Image, variant: str, rng: np.random.Generator,
              textures: Sequence[Image.Image] = ()) -> tuple[Image.Image, int]:
    """(the re-framed RGB picture, its JPEG quality). Content stays inside the canvas."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    def backdrop(w: int, h: int) -> Image.Image:
        return (_backdrop(w, h, rng, textures) if variant == "background"
                else Image.new("RGB", (w, h), (255, 255, 255)))

    canvas = place(im, int(rng.integers(256, 401)), backdrop, rng)
    return canvas, int(rng.integers(70, 93))


def write_wild_copies(paths: Sequence[Path], root: Path, out_dir: Path, variant: str, seed: int = 0,
                      progress: Callable[[int], None] | None = None) -> list[Path]:
    """A JPEG wild copy of every picture under out_dir/<variant>/<path relative to root>.jpg."""
    textures = texture_images(TEXTURES) if variant == "background" else ()
    out = []
    for i, p in enumerate(paths):
        p = Path(p)
        try:  # lexically (a symlinked copy of a data set keeps its own layout)
            rel = Path(os.path.abspath(p)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            rel = "outside/" + p.name
        dest = out_dir / f"v{VERSION}-seed{seed}" / variant / (rel + ".jpg")
        if not dest.is_file():
            with Image.open(p) as im:
                pic, quality = wild_copy(im, variant, _rng(seed, variant, rel), textures)
            buf = io.BytesIO()
            pic.save(buf, "JPEG", quality=quality)
            dest.parent.mkdir(parents=True, exist_ok=True)
            replace_atomic(dest, buf.getvalue())
        out.append(dest)
        if progress:
            progress(i + 1)
    return out
