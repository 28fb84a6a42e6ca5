"""Content framing: crop a picture to what is drawn on it and put it on white, the same way every time.

Why: the indexed pictures of a drawing or icon set are centred on white, and a user's picture is not:
a screenshot has the icon off-centre at another scale, a phone photo of a sticker has it on a table.
Letter-boxing the whole canvas made the encoder see a small off-centre icon, and a user's query lost
half to two thirds of its matches (benchmarks/RESULTS.md, "Wild queries"). So before the letter-box,
a picture whose border is a plain backdrop is cropped to its content and the backdrop painted white:

- with transparency, the content is what is not transparent (it is composited on white anyway);
- otherwise the backdrop is modelled from the picture's border as a smooth colour (a plane per
  channel: a flat colour or a gradient; JPEG and sensor noise are measured on the border and
  tolerated). If the border does not fit such a model (a photograph, a texture) the picture is left
  as it is: without a segmentation model nothing tells content from a busy background, and a photo
  is framed the way its photographer meant anyway.
- the content is every pixel farther from the backdrop model than the border's own noise allows,
  less isolated specks; it is cropped with a margin of MARGIN of its longer side, and every pixel
  that is within the noise of the backdrop becomes white.

It runs at index time and at query time alike (preprocess.square_pixels, when the bundle's
PreprocessSpec says framing "content"), so both sides are framed by one implementation. All of it
works on a copy no larger than 2 x the input size, so it costs about a millisecond per picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FRAMINGS = ("letterbox", "content")

MARGIN = 0.04            # margin around the content, as a share of its longer side
BORDER = 2               # border thickness (work pixels) the backdrop is estimated from
MIN_CONTRAST = 28.0      # a content pixel differs from the backdrop by at least this (0..255 levels)
NOISE_FACTOR = 3.0       # ... and by at least this many times the border's 90th-percentile residual
MAX_BACKDROP_NOISE = 24.0  # a border noisier than this (90th percentile) is not a plain backdrop
MIN_INLIERS = 0.6        # share of border pixels the backdrop model must explain
INLIER_MIN = 6.0         # border pixels within this of the model (or 3 x the median residual) fit it
WHITE_ENOUGH = 12.0      # a backdrop within this of white everywhere is left as it is (no repaint)


def _work_copy(im: Image.Image, size: int) -> tuple[Image.Image, float]:
    """The picture at most 2 x size on its longer side, and the factor back to the original."""
    side = max(im.size)
    limit = 2 * size
    if side <= limit:
        return im, 1.0
    f = limit / side
    small = im.resize((max(1, round(im.size[0] * f)), max(1, round(im.size[1] * f))),
                      Image.Resampling.BILINEAR, reducing_gap=2.0)
    return small, side / limit


def _border_mask(h: int, w: int, t: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[:t], m[-t:], m[:, :t], m[:, -t:] = True, True, True, True
    return m


def fit_backdrop(a: np.ndarray) -> tuple[np.ndarray, float] | None:
    """A smooth backdrop model from the border of `a` (float32 H x W x 3): (the model at every pixel,
    the border's 90th-percentile residual), or None when the border is not a plain backdrop."""
    h, w = a.shape[:2]
    t = min(BORDER, max(1, min(h, w) // 4))
    border = _border_mask(h, w, t)
    ys, xs = np.nonzero(border)
    design = np.stack([np.ones(len(xs), np.float32), xs / max(w - 1, 1), ys / max(h - 1, 1)], axis=1)
    values = a[ys, xs]
    if values.min() == values.max():  # one exact colour all round (an icon on white): nothing to fit
        return np.broadcast_to(values[:1][None], a.shape), 0.0
    keep = np.ones(len(xs), dtype=bool)
    for _ in range(2):  # fit, drop the border pixels the content crosses, refit
        coef, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
        resid = np.abs(values - design @ coef).max(axis=1)
        keep = resid <= max(INLIER_MIN, NOISE_FACTOR * float(np.quantile(resid[keep], 0.5)))
    if keep.mean() < MIN_INLIERS:
        return None
    noise = float(np.quantile(resid[keep], 0.9))
    if noise > MAX_BACKDROP_NOISE:
        return None
    coef = coef.astype(np.float32)
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] if w > 1 else np.zeros((1, 1, 1), np.float32)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None] if h > 1 else np.zeros((1, 1, 1), np.float32)
    model = (coef[0] + ys * coef[2]) + xs * coef[1]
    return model, noise


def _despeckle(mask: np.ndarray) -> np.ndarray:
    """Drop content pixels none of whose 8 neighbours is content (noise, JPEG ringing)."""
    p = np.pad(mask, 1)
    n = np.zeros(mask.shape, dtype=np.int8)
    h, w = mask.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy != 1 or dx != 1:
                n += p[dy:dy + h, dx:dx + w]
    return mask & (n > 0)


def content_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the True pixels with MARGIN added on every side (it may reach
    past the picture: the crop pads with white there, so content at an edge stays centred); None
    if there is none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    m = int(np.ceil(MARGIN * max(bottom - top, right - left)))
    return left - m, top - m, right + m, bottom + m


def crop_on_white(im: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """im.crop(box), with white wherever the box reaches past the picture."""
    left, top, right, bottom = box
    inside = (max(0, left), max(0, top), min(im.size[0], right), min(im.size[1], bottom))
    part = im.crop(inside)
    if inside == box:
        return part
    canvas = Image.new("RGB", (right - left, bottom - top), (255, 255, 255))
    canvas.paste(part, (inside[0] - left, inside[1] - top))
    return canvas


def _alpha_box(im: Image.Image) -> tuple[int, int, int, int] | None:
    alpha = np.asarray(im.getchannel("A"))
    if alpha.min() == 255:
        return None  # opaque everywhere: the colours decide
    return content_box(alpha > 8) or (0, 0, im.size[0], im.size[1])


def _on_white(im: Image.Image) -> Image.Image:
    canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
    canvas.alpha_composite(im)
    return canvas.convert("RGB")


def frame_content(im: Image.Image, size: int) -> Image.Image:
    """`im` (RGB, or RGBA with its transparency) -> RGB on white, cropped to its content.

    Returns the picture unchanged (composited on white) when it has no plain backdrop or no
    content at all: an empty picture stays a valid, blank query."""
    if im.mode == "RGBA":
        box = _alpha_box(im)
        if box is not None:
            return crop_on_white(_on_white(im), box)
        im = im.convert("RGB")
    work, back = _work_copy(im, size)
    a = np.asarray(work, dtype=np.float32)
    if min(a.shape[:2]) < 4:
        return im
    fit = fit_backdrop(a)
    if fit is None:
        return im
    model, noise = fit
    d = np.abs(a - model)
    resid = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])
    content = _despeckle(resid > max(MIN_CONTRAST, NOISE_FACTOR * noise))
    box = content_box(content)
    if box is None:
        return im
    backdrop = resid <= max(MIN_CONTRAST, NOISE_FACTOR * noise) * 0.5
    if backdrop.any() and np.abs(model[backdrop] - 255.0).max() > WHITE_ENOUGH:
        a = a.copy()
        a[backdrop] = 255.0     # a coloured backdrop becomes the white every indexed icon sits on
        work = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB")
        back = 1.0              # painted at work resolution: crop the work copy
    elif back != 1.0:
        l, t, r, b = box
        return crop_on_white(im, (round(l * back), round(t * back), round(r * back), round(b * back)))
    return crop_on_white(work, box)
