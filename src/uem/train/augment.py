"""Augmentations that bridge colour artwork and line art (uint8 (S, S, 3) in, the same shape out).

They run between `square_pixels` and `normalize` of uem.engine.preprocess, never instead of them.
One view = a change of framing, then one *style*. The framing is, with probability `place_p`, the
picture placed on a synthetic backdrop at another scale and position and framed again by the
engine (placement.py: what a user's picture goes through), else a random resized crop with a small
rotation. The styles:

    colour   colour jitter (brightness, contrast, saturation, hue rotation by channel mixing)
    grey     greyscale with a random contrast
    edges    black strokes where the colour changes, on white: what a colour picture looks like drawn
    phase    the phase-only image (Fourier amplitude set to 1): shape without colour or texture
    invert   the foreground's colours inverted (the white background stays white)

and, with some probability, stroke thickening or thinning (a 3x3 min / max filter, as PIL's
MinFilter / MaxFilter, on dark-on-white).
Every random choice comes from the numpy Generator passed in, so a seed fixes every view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..engine.preprocess import PreprocessSpec
from .placement import placed_view

STYLES = ("colour", "grey", "edges", "phase", "invert")
PLACED_STYLES = ("colour", "grey")
VERSION = 3  # bump when a view changes for the same seed: cached trunk outputs depend on it


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.6, 1.0)   # area share of the random resized crop
    rotate_deg: float = 10.0
    # Probability of each style, in the order of STYLES.
    style_p: tuple[float, ...] = (0.3, 0.2, 0.3, 0.1, 0.1)
    stroke_p: float = 0.3                           # chance to thicken (2/3) or thin (1/3) dark strokes
    place_p: float = 0.5                            # chance of a placed view (placement.py) instead of a crop
    place_photos: bool = False                      # placed views also on tinted photo textures

    def __post_init__(self) -> None:
        """Validated where it is built (a config.json's lists become the tuples a new config has,
        so the trunk cache's fingerprint, which includes repr(self), is the same after a resume)."""
        try:
            crop = tuple(float(x) for x in self.crop_scale)
            style = tuple(float(x) for x in self.style_p)
            rotate, stroke, place = float(self.rotate_deg), float(self.stroke_p), float(self.place_p)
        except (TypeError, ValueError):
            raise ValueError(f"augment: crop_scale, style_p, rotate_deg and stroke_p must be numbers, "
                             f"got {self!r}") from None
        object.__setattr__(self, "crop_scale", crop)
        object.__setattr__(self, "style_p", style)
        problems = []
        if len(crop) != 2 or not 0 < crop[0] <= crop[1] <= 1:
            problems.append(f"augment.crop_scale must be (low, high) with 0 < low <= high <= 1, got {crop}")
        if not 0 <= rotate <= 180:
            problems.append(f"augment.rotate_deg must be in [0, 180], got {self.rotate_deg}")
        if len(style) != len(STYLES) or not all(0 <= x < float("inf") for x in style) or sum(style) <= 0:
            problems.append(f"augment.style_p must be {len(STYLES)} non-negative weights ({', '.join(STYLES)}) "
                            f"with a positive sum, got {style}")
        if not 0 <= stroke <= 1:
            problems.append(f"augment.stroke_p must be in [0, 1], got {self.stroke_p}")
        if not isinstance(self.place_photos, bool):
            problems.append(f"augment.place_photos must be true or false, got {self.place_photos!r}")
        if not 0 <= place <= 1:
            problems.append(f"augment.place_p must be in [0, 1], got {self.place_p}")
        if problems:
            raise ValueError("; ".join(problems))


def _grey(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def geometric(im: Image.Image, cfg: AugmentConfig, rng: np.random.Generator) -> Image.Image:
    """Random resized crop + small rotation as ONE affine resampling (white fill)."""
    s = im.size[0]
    angle = np.deg2rad(float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)))
    area = float(rng.uniform(*cfg.crop_scale)) * s * s
    ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = min(s, np.sqrt(area * ratio))
    h = min(s, np.sqrt(area / ratio))
    x0 = float(rng.uniform(0, s - w))
    y0 = float(rng.uniform(0, s - h))
    # output (u, v) -> crop point p = (x0 + u w/s, y0 + v h/s) -> rotated about the centre c
    co, si, c = np.cos(angle), np.sin(angle), s / 2
    coeffs = (co * w / s, si * h / s, co * (x0 - c) + si * (y0 - c) + c,
              -si * w / s, co * h / s, -si * (x0 - c) + co * (y0 - c) + c)
    return im.transform((s, s), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                        fillcolor=(255, 255, 255))


def colour_jitter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x float32 (S, S, 3) in [0, 255]."""
    x = x * rng.uniform(0.7, 1.3)                                      # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.7, 1.3) + mean                      # contrast
    g = _grey(x)[..., None]
    x = g + (x - g) * rng.uniform(0.3, 1.5)                            # saturation
    theta = rng.uniform(-np.pi, np.pi)                                  # hue: rotate around grey axis
    c, s = np.cos(theta), np.sin(theta)
    k = 1 / 3
    rot = np.array([[c + (1 - c) * k, k * (1 - c) - np.sqrt(k) * s, k * (1 - c) + np.sqrt(k) * s],
                    [k * (1 - c) + np.sqrt(k) * s, c + k * (1 - c), k * (1 - c) - np.sqrt(k) * s],
                    [k * (1 - c) - np.sqrt(k) * s, k * (1 - c) + np.sqrt(k) * s, c + k * (1 - c)]],
                   dtype=np.float32)
    return x @ rot.T


def edges(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark strokes on white where any channel changes (colour region borders + the silhouette)."""
    gy = np.abs(np.diff(x, axis=0, prepend=x[:1]))
    gx = np.abs(np.diff(x, axis=1, prepend=x[:, :1]))
    mag = np.maximum(gx, gy).max(axis=2)
    line = mag > rng.uniform(12, 48)
    out = np.where(line, 0.0, 255.0).astype(np.float32)
    return np.repeat(out[..., None], 3, axis=2)


def phase_image(x: np.ndarray) -> np.ndarray:
    """Phase prior (docs/method.md): amplitude set to 1, inverse FFT; edge-like, dark on white."""
    g = _grey(x)
    f = np.fft.fft2(g - g.mean())
    p = np.real(np.fft.ifft2(f / (np.abs(f) + 1e-8)))
    v = np.abs(p)
    v = v / (np.percentile(v, 99.5) + 1e-8)
    out = 255.0 * (1.0 - np.clip(v, 0.0, 1.0))
    return np.repeat(out[..., None].astype(np.float32), 3, axis=2)


def invert_foreground(x: np.ndarray) -> np.ndarray:
    fg = _grey(x) < 245
    out = x.copy()
    out[fg] = 255.0 - out[fg]
    return out


def _extreme3(x: np.ndarray, fn) -> np.ndarray:
    """3x3 min or max filter (edge-replicated), separable: what PIL MinFilter(3)/MaxFilter(3) do."""
    p = np.pad(x, ((1, 1), (0, 0), (0, 0)), mode="edge")
    x = fn(fn(p[:-2], p[1:-1]), p[2:])
    p = np.pad(x, ((0, 0), (1, 1), (0, 0)), mode="edge")
    return fn(fn(p[:, :-2], p[:, 1:-1]), p[:, 2:])


def stroke(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thicken (min filter spreads dark) or thin (max filter spreads white) the drawn strokes."""
    return _extreme3(x, np.minimum if rng.random() < 2 / 3 else np.maximum)


def augment(pixels: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
            spec: PreprocessSpec | None = None) -> np.ndarray:
    """One random view of a uint8 (S, S, 3) picture; the same shape and dtype back. A placed view
    is framed as `spec` frames a query (default: content framing)."""
    weights = np.asarray(cfg.style_p, dtype=np.float64)
    if cfg.place_p and rng.random() < cfg.place_p:
        x = placed_view(pixels, rng, cfg.rotate_deg, photos=cfg.place_photos, spec=spec).astype(np.float32)
        # a placed view keeps its look (colour or grey): the stroke styles turn a backdrop's noise
        # into a field of specks that no query looks like
        weights = weights * np.isin(STYLES, PLACED_STYLES)
        if weights.sum() <= 0:
            weights = np.isin(STYLES, PLACED_STYLES).astype(np.float64)
    else:
        x = np.asarray(geometric(Image.fromarray(pixels), cfg, rng), dtype=np.float32)
    style = STYLES[int(rng.choice(len(STYLES), p=weights / weights.sum()))]
    if style == "colour":
        bg = _grey(x) >= 250                                            # the background stays white
        x = colour_jitter(x, rng)
        x[bg] = 255.0
    elif style == "grey":
        g = _grey(x)
        g = (g - 255.0) * rng.uniform(0.6, 1.4) + 255.0               # contrast around the white
        x = np.repeat(g[..., None], 3, axis=2)
    elif style == "edges":
        x = edges(x, rng)
    elif style == "phase":
        x = phase_image(x)
    else:
        x = invert_foreground(x)
    out = np.clip(x, 0, 255).astype(np.uint8)
    if rng.random() < cfg.stroke_p:
        out = stroke(out, rng)
    return out
