"""Image preprocessing — the single implementation used by training, export and the runtime.

Any image a user hands us (path, bytes, file object, PIL image or uint8 array; any mode, EXIF
rotation, transparency, 16-bit, CMYK, animated) becomes an RGB picture composited on white,
letter-boxed to a square of the model's input size and normalised. Keeping this in one place is what
makes the int8 engine see exactly what the encoder saw during training.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .framing import FRAMINGS, frame_content, on_white

ImageSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, Image.Image, np.ndarray]

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)

# Decompression-bomb guard on the pixels actually decoded (JPEG decodes at 1/2..1/8 scale when a
# small picture is wanted, so a 100 MP photo still passes). A 316 KB PNG can hold 10k x 10k white
# pixels: at the former 100 MP limit that cost 4 s and 300 MB per file on the shared 2-core VM. At
# 40 MP a 36 MP PNG bomb (0.7-0.9 s of CPU alone) passed the check and then took 2.8 s wall on a
# loaded machine, over the 2 s per-file bound of the reliability fuzzing; 24 MP keeps the worst
# accepted non-JPEG decode near half a second (JPEG photos are decoded at reduced scale anyway).
MAX_PIXELS = 24_000_000

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "lanczos": Image.Resampling.LANCZOS}


@dataclass(frozen=True)
class PreprocessSpec:
    """What the encoder expects; stored in the bundle manifest and in training configs."""

    size: int = 128
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    resample: str = "bicubic"
    # "content": crop to the drawn content and paint a plain backdrop white before the letter-box
    # (framing.py); "letterbox": the whole canvas as it is (bundles written before framing existed).
    framing: str = "content"

    def __post_init__(self) -> None:
        if self.size < 32 or self.size % 32:
            raise ValueError(f"input size must be a multiple of 32 and >= 32, got {self.size}")
        if self.resample not in _RESAMPLE:
            raise ValueError(f"resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, got {self.framing!r}")

    def to_dict(self) -> dict:
        """JSON form; "framing" only when it is not the letter-box, so a letter-boxed spec records
        what it always did (manifests and cache fingerprints stay byte-identical)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        if self.framing == "letterbox":
            del d["framing"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        return cls(size=int(d["size"]), mean=tuple(map(float, d["mean"])),
                   std=tuple(map(float, d["std"])), resample=str(d.get("resample", "bicubic")),
                   framing=str(d.get("framing", "letterbox")))  # recorded before framing: the old way


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


def _open(source: ImageSource) -> Image.Image:
    """Open lazily (header only) so the pixel limit is checked before any decoding."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except OSError as e:  # e.g. a name too long, a loop of links, no permission
            raise ImageError(f"{path}: cannot read ({e.strerror})") from None
        if stat.S_ISDIR(st.st_mode):
            raise ImageError(f"{path}: is a directory, not an image")
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the decoder forever
            raise ImageError(f"{path}: not a regular file")
        if st.st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        fp: BinaryIO | str = str(path)
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("empty image data (0 bytes)")
        fp = io.BytesIO(bytes(source))
    else:
        fp = source  # a binary file object
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{_describe(source)}: image too large ({e})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{_describe(source)}: not an image (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"{_describe(source)}: cannot read image ({e})") from None


def _to_rgb_on_white(im: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """Any mode -> RGB; transparent pixels become white (icons and sketches live on white).
    With `keep_alpha`, a picture with transparency comes back RGBA (content framing reads it)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") else max(float(a.max()), 255.0)
        im = Image.fromarray(np.clip(a * (255.0 / hi), 0, 255).astype(np.uint8), "L")
    if im.mode == "RGB":
        return im
    has_alpha = im.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
        im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    return rgba if keep_alpha else on_white(rgba)


def load_image(source: ImageSource, *, draft_size: int | None = None,
               max_pixels: int = MAX_PIXELS, keep_alpha: bool = False) -> Image.Image:
    """Decode `source` into an RGB image on white, EXIF-oriented. Raises ImageError, nothing else.

    `draft_size` lets JPEG decode at a reduced scale (DCT scaling) when only a small picture is needed.
    `keep_alpha`: a picture with transparency comes back RGBA instead of composited on white.
    """
    if isinstance(source, np.ndarray):
        arr = source
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise ImageError(f"array image must be uint8 HxW, HxWx1, HxWx3 or HxWx4, got {arr.dtype} {arr.shape}")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.size == 0:
            raise ImageError("empty array image")
        im = Image.fromarray(np.ascontiguousarray(arr))
    elif isinstance(source, Image.Image):
        im = source
    else:
        im = _open(source)
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError(f"{_describe(source)}: image has no pixels ({w}x{h})")
    try:
        if draft_size and im.format == "JPEG":
            im.draft("RGB", (draft_size, draft_size))  # DCT scaling: decode fewer pixels
    except (OSError, ValueError) as e:
        raise ImageError(f"{_describe(source)}: corrupt or truncated image ({e})") from None
    if im.size[0] * im.size[1] > max_pixels:
        raise ImageError(f"{_describe(source)}: image too large ({w}x{h} pixels; limit {max_pixels})")
    try:
        im = ImageOps.exif_transpose(im)
        im.load()
        return _to_rgb_on_white(im, keep_alpha)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{_describe(source)}: image too large ({e})") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError,
            ZeroDivisionError, struct.error) as e:
        raise ImageError(f"{_describe(source)}: corrupt or truncated image ({e})") from None


def fit_square(im: Image.Image, size: int, resample: str = "bicubic") -> Image.Image:
    """Scale the longer side to `size` keeping aspect, then centre on a white size x size canvas."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    scaled = im.resize((nw, nh), _RESAMPLE[resample])
    if (nw, nh) == (size, size):
        return scaled
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(scaled, ((size - nw) // 2, (size - nh) // 2))
    return canvas


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float32 (..., 3, H, W) with the spec's mean/std.

    One channel at a time, written straight into the CHW result: broadcasting a (3,) mean over the
    last axis makes numpy's inner loop 3 elements long (~5x slower per query image). Same float32
    operations in the same order as (x / 255 - mean) / std, so the result is bit for bit the same.
    """
    pixels = np.asarray(pixels)
    out = np.empty(pixels.shape[:-3] + (3,) + pixels.shape[-3:-1], dtype=np.float32)
    for c in range(3):
        o = out[..., c, :, :]
        np.multiply(pixels[..., c], np.float32(1.0 / 255.0), out=o, dtype=np.float32)
        o -= np.float32(spec.mean[c])
        o /= np.float32(spec.std[c])
    return out


def square_pixels(source: ImageSource, spec: PreprocessSpec) -> np.ndarray:
    """Decode + orient + RGB-on-white (+ content framing) + letter-box: uint8 (S, S, 3).
    Training augments from here."""
    return np.asarray(fit_square(framed(decoded(source, spec), spec), spec.size, spec.resample), dtype=np.uint8)


def decoded(source: ImageSource, spec: PreprocessSpec) -> Image.Image:
    """The first step of square_pixels: the picture as `spec` needs it decoded. For content framing
    a JPEG decodes at no less than 4 x the input size (a small icon in a large photo still has
    pixels to be cropped to) and transparency is kept (it says where the content is)."""
    if spec.framing != "content":
        return load_image(source, draft_size=spec.size)
    return load_image(source, draft_size=4 * spec.size, keep_alpha=True)


def framed(im: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """The second step of square_pixels: a decoded picture framed as `spec` says (RGB)."""
    return frame_content_safely(im, spec.size) if spec.framing == "content" else im


def frame_content_safely(im: Image.Image, size: int) -> Image.Image:
    """frame_content, or (should its numerics ever fail on some picture) the picture unframed on
    white: framing improves a query, it must never be the reason one fails."""
    try:
        return frame_content(im, size)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError, MemoryError):
        return _to_rgb_on_white(im)


def preprocess(source: ImageSource, spec: PreprocessSpec) -> np.ndarray:
    """One image -> float32 (3, S, S), ready for the encoder."""
    return normalize(square_pixels(source, spec), spec)


def preprocess_batch(sources: Iterable[ImageSource], spec: PreprocessSpec) -> np.ndarray:
    """Many images -> float32 (N, 3, S, S). Raises ImageError on the first bad one."""
    pix = [square_pixels(s, spec) for s in sources]
    if not pix:
        return np.zeros((0, 3, spec.size, spec.size), dtype=np.float32)
    return normalize(np.stack(pix), spec)
