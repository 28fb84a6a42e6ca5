"""Augmentations that bridge colour artwork and line art (uint8 (S, S, 3) in, the same shape out).

They run between `square_pixels` and `normalize` of uem.engine.preprocess, never instead of them.
One view = a small geometric change (random resized crop + small rotation), then one *style*:

    colour   colour jitter (brightness, contrast, saturation, hue rotation by channel mixing)
    grey     greyscale with a random contrast
    edges    black strokes where the colour changes, on white: what a colour picture looks like drawn
    phase    the phase-only image (Fourier amplitude set to 1): shape without colour or texture
    invert   the foreground's colours inverted (the white background stays white)

and, with some probability, stroke thickening or thinning (PIL MinFilter / MaxFilter on dark-on-white).
Every random choice comes from the numpy Generator passed in, so a seed fixes every view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

STYLES = ("colour", "grey", "edges", "phase", "invert")


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.6, 1.0)   # area share of the random resized crop
    rotate_deg: float = 10.0
    # Probability of each style, in the order of STYLES.
    style_p: tuple[float, ...] = (0.3, 0.2, 0.3, 0.1, 0.1)
    stroke_p: float = 0.3                           # chance to thicken (2/3) or thin (1/3) dark strokes


def _grey(x: np.ndarray) -> np.ndarray:
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def geometric(im: Image.Image, cfg: AugmentConfig, rng: np.random.Generator) -> Image.Image:
    s = im.size[0]
    angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=(255, 255, 255))
    area = float(rng.uniform(*cfg.crop_scale)) * s * s
    ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    w = int(round(min(s, np.sqrt(area * ratio))))
    h = int(round(min(s, np.sqrt(area / ratio))))
    x0 = int(rng.integers(0, s - w + 1))
    y0 = int(rng.integers(0, s - h + 1))
    return im.resize((s, s), Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h))


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
    """Phase prior (UEM-METHOD.md): amplitude set to 1, inverse FFT; edge-like, dark on white."""
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


def stroke(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Thicken (MinFilter spreads dark) or thin (MaxFilter spreads white) the drawn strokes."""
    return im.filter(ImageFilter.MinFilter(3) if rng.random() < 2 / 3 else ImageFilter.MaxFilter(3))


def augment(pixels: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One random view of a uint8 (S, S, 3) picture; the same shape and dtype back."""
    im = geometric(Image.fromarray(pixels), cfg, rng)
    x = np.asarray(im, dtype=np.float32)
    style = STYLES[int(rng.choice(len(STYLES), p=np.asarray(cfg.style_p) / np.sum(cfg.style_p)))]
    if style == "colour":
        x = colour_jitter(x, rng)
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
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))
    if rng.random() < cfg.stroke_p:
        out = stroke(out, rng)
    return np.asarray(out, dtype=np.uint8)
