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
is whatever is not white and connected to the border.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageFilter

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
    texture_files()


def _sample_folder() -> Path:
    """scikit-image's folder of sample pictures (the package is found, not imported); UemError when
    scikit-image is not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise UemError("wild queries need scikit-image's sample photographs: pip install 'uem[eval]'")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def texture_files(names: Sequence[str] = TEXTURES) -> list[Path]:
    """The sample photographs `names` (default: those the "background" variant cuts backdrops
    from); UemError when scikit-image or one of them is missing."""
    folder = _sample_folder()
    files = [folder / n for n in names]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UemError(f"scikit-image lacks the sample photographs {', '.join(missing)} in {folder}")
    return files


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


def _rng(seed: int, variant: str, key: str) -> np.random.Generator:
    return np.random.default_rng([VERSION, int(seed), VARIANTS.index(variant),
                                  zlib.crc32(key.encode("utf-8"))])


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
    long_side = int(rng.integers(256, 401))
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (round(long_side * aspect), long_side)
    canvas = (_backdrop(w, h, rng, textures) if variant == "background"
              else Image.new("RGB", (w, h), (255, 255, 255)))
    canvas = compose(cut_out(im), canvas, rng)
    if rng.random() < 1 / 3:
        canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
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
