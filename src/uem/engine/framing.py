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
PreprocessSpec says framing "content"), so both sides are framed by one implementation. The
backdrop is found on a copy no larger than 2 x the input size and painted on the crop (at most
2 x the input size too): about 0.6 ms for an icon on white, 4-5 ms for a 400 px picture on colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops

# A change to how "content" frames (any constant below) changes what existing bundles' items were
# indexed with: it gets a new name here, and "content" keeps meaning this algorithm.
FRAMINGS = ("letterbox", "content")
VERSION = 1  # of this module's output for the same picture: part of the training cache's fingerprint

MARGIN = 0.04            # margin around the content, as a share of its longer side
BORDER = 2               # border thickness (work pixels) the backdrop is estimated from
MIN_CONTRAST = 28.0      # a content pixel differs from the backdrop by at least this (0..255 levels)
NOISE_FACTOR = 3.0       # ... and by at least this many times the border's 90th-percentile residual
MAX_BACKDROP_NOISE = 24.0  # a border noisier than this (90th percentile) is not a plain backdrop
MIN_INLIERS = 0.6        # share of border pixels the backdrop model must explain
INLIER_MIN = 6.0         # border pixels within this of the model (or 3 x the median residual) fit it
WHITE_ENOUGH = 12.0      # a backdrop within this of white everywhere is left as it is (no repaint)


def at_most(im: Image.Image, side: int) -> tuple[Image.Image, float]:
    """`im` shrunk (bilinear) so its longer side is at most `side`, and the factor back to `im`."""
    longer = max(im.size)
    if longer <= side:
        return im, 1.0
    f = side / longer
    small = im.resize((max(1, round(im.size[0] * f)), max(1, round(im.size[1] * f))),
                      Image.Resampling.BILINEAR, reducing_gap=2.0)
    return small, longer / side


def _border_mask(h: int, w: int, t: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[:t], m[-t:], m[:, :t], m[:, -t:] = True, True, True, True
    return m


@dataclass(frozen=True)
class Backdrop:
    """A plane per channel over a picture's normalised coordinates (x, y in [0, 1]), and the noise
    its border showed around it (90th-percentile residual, 0..255 levels)."""

    coef: np.ndarray        # (3, 3): rows constant, x, y; columns R, G, B
    noise: float
    width: int              # the picture it was fitted on
    height: int

    def at(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """The model at pixel columns xs and rows ys of the fitted picture: (len(ys), len(xs), 3)."""
        c = self.coef.astype(np.float32)
        if self.flat:  # c[0] + 0 * y + 0 * x, bit for bit, without three full-size passes
            return np.broadcast_to(c[0], (len(ys), len(xs), 3))
        x = (np.asarray(xs, np.float32) / np.float32(max(self.width - 1, 1)))[None, :, None]
        y = (np.asarray(ys, np.float32) / np.float32(max(self.height - 1, 1)))[:, None, None]
        return (c[0] + y * c[2]) + x * c[1]

    @property
    def flat(self) -> bool:
        """One colour everywhere (no gradient terms)."""
        return not self.coef[1:].any()

    @property
    def threshold(self) -> float:
        """A pixel farther than this from the model is content."""
        return max(MIN_CONTRAST, NOISE_FACTOR * self.noise)


def _plane(design: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least squares through the 3 x 3 normal equations in float64: the same answer on every CPU
    (a BLAS lstsq takes other kernels on AVX2 and AVX-512 machines)."""
    d = design.astype(np.float64)
    return np.linalg.solve(d.T @ d + 1e-9 * np.eye(3), d.T @ values.astype(np.float64))


def fit_backdrop(a: np.ndarray) -> Backdrop | None:
    """A smooth backdrop model from the border of `a` (H x W x 3, uint8 or float), or None when the
    border is not a plain backdrop."""
    h, w = a.shape[:2]
    t = min(BORDER, max(1, min(h, w) // 4))
    ys, xs = np.nonzero(_border_mask(h, w, t))
    design = np.stack([np.ones(len(xs)), xs / max(w - 1, 1), ys / max(h - 1, 1)], axis=1)
    values = a[ys, xs].astype(np.float64)
    if values.min() == values.max():  # one exact colour all round (an icon on white): nothing to fit
        return Backdrop(np.vstack([values[0], np.zeros(3), np.zeros(3)]), 0.0, w, h)
    keep = np.ones(len(xs), dtype=bool)
    for _ in range(2):  # fit, drop the border pixels the content crosses, refit
        coef = _plane(design[keep], values[keep])
        resid = np.abs(values - design @ coef).max(axis=1)
        keep = resid <= max(INLIER_MIN, NOISE_FACTOR * float(np.quantile(resid[keep], 0.5)))
    if keep.mean() < MIN_INLIERS:
        return None
    noise = float(np.quantile(resid[keep], 0.9))
    if noise > MAX_BACKDROP_NOISE:
        return None
    return Backdrop(coef, noise, w, h)


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


def on_white(im: Image.Image) -> Image.Image:
    """An RGBA picture composited on white, as RGB."""
    canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
    canvas.alpha_composite(im)
    return canvas.convert("RGB")


def _residual(a: np.ndarray, model: np.ndarray) -> np.ndarray:
    d = np.abs(a - model)
    return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])


def _content_mask(work: Image.Image, backdrop: Backdrop) -> np.ndarray:
    """Pixels of `work` farther from the backdrop than its threshold, before despeckling.

    A backdrop of one exact colour (an icon on white: most indexed pictures and many queries) is
    compared in uint8 by Pillow, |pixel - colour| per channel exactly as the float model would give
    it, in a fraction of the time; any other backdrop goes through its float model."""
    if backdrop.flat and backdrop.noise == 0.0 and np.array_equal(backdrop.coef[0], np.round(backdrop.coef[0])):
        colour = tuple(int(v) for v in backdrop.coef[0])
        d = np.asarray(ImageChops.difference(work, Image.new("RGB", work.size, colour)))
        return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2]) > backdrop.threshold
    a = np.asarray(work, dtype=np.float32)
    return _residual(a, backdrop.at(np.arange(a.shape[1]), np.arange(a.shape[0]))) > backdrop.threshold


def _paint(crop: Image.Image, box: tuple[int, int, int, int], scale: float, backdrop: Backdrop,
           size: int) -> Image.Image:
    """`crop` (the picture's `box`, in pixels `scale` times the work copy's) with every pixel within
    the backdrop's noise painted white; first brought to at most 2 x size on its longer side."""
    crop, _ = at_most(crop, 2 * size)
    a = np.asarray(crop, dtype=np.float32)
    h, w = a.shape[:2]
    # crop pixel (i, j) -> work-copy coordinates, where the backdrop was fitted
    xs = (box[0] + (np.arange(w) + 0.5) * (box[2] - box[0]) / w - 0.5) / scale
    ys = (box[1] + (np.arange(h) + 0.5) * (box[3] - box[1]) / h - 0.5) / scale
    paint = _residual(a, backdrop.at(xs, ys)) <= backdrop.threshold * 0.5
    if not paint.any():
        return crop
    a = a.copy()
    a[paint] = 255.0        # a coloured backdrop becomes the white every indexed icon sits on
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "RGB")


def frame_content(im: Image.Image, size: int) -> Image.Image:
    """`im` (RGB, or RGBA with its transparency) -> RGB on white, cropped to its content.

    Returns the picture unchanged (composited on white) when it has no plain backdrop or no
    content at all: an empty picture stays a valid, blank query."""
    if im.mode == "RGBA":
        box = _alpha_box(im)
        im = on_white(im)
        if box is not None and not _whole(box, im.size):
            return crop_on_white(im, box)
    if im.mode != "RGB":
        im = im.convert("RGB")
    work, back = at_most(im, 2 * size)     # the backdrop is found on this copy
    a = np.asarray(work)
    if min(a.shape[:2]) < 4:
        return im
    backdrop = fit_backdrop(a)
    if backdrop is None:
        return im
    box = content_box(_despeckle(_content_mask(work, backdrop)))
    if box is None:
        return im
    full = (round(box[0] * back), round(box[1] * back), round(box[2] * back), round(box[3] * back))
    crop = crop_on_white(im, full)
    centre = backdrop.at(np.array([(box[0] + box[2]) / 2]), np.array([(box[1] + box[3]) / 2]))
    corners = backdrop.at(np.array([0, a.shape[1] - 1]), np.array([0, a.shape[0] - 1]))
    if max(np.abs(centre - 255.0).max(), np.abs(corners - 255.0).max()) <= WHITE_ENOUGH:
        return crop         # a white (or nearly white) backdrop: nothing to paint
    return _paint(crop, full, back, backdrop, size)


def _whole(box: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    """The box holds (nearly) the whole picture: its transparency says nothing about the content
    (a screenshot with rounded corners), so the colours decide."""
    return box[2] - box[0] >= 0.98 * size[0] and box[3] - box[1] >= 0.98 * size[1]
