"""Content framing (uem.engine.framing): the crop a picture gets before the letter-box."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from uem.engine import PreprocessSpec
from uem.engine.framing import MARGIN, content_box, fit_backdrop, frame_content
from uem.engine.preprocess import square_pixels


def _glyph(side: int) -> Image.Image:
    """A two-colour shape on white: a red disc with a blue bar (not symmetric)."""
    im = Image.new("RGB", (side, side), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.ellipse([0, 0, side - 1, side - 1], fill=(220, 40, 40))
    d.rectangle([side // 4, side // 2, side - 1, side // 2 + side // 6], fill=(30, 60, 200))
    return im


def _placed(glyph: Image.Image, canvas=(200, 150), at=(0, 0), colour=(255, 255, 255)) -> Image.Image:
    c = Image.new("RGB", canvas, colour)
    c.paste(glyph, at)
    return c


def _framed(im, size=128) -> np.ndarray:
    return square_pixels(im, PreprocessSpec(size=size, framing="content")).astype(np.float32)


def test_content_box_hand_computed():
    m = np.zeros((100, 100), bool)
    m[20:40, 30:80] = True          # rows 20..39, cols 30..79: longer side 50 -> margin ceil(0.04*50)=2
    assert MARGIN == 0.04
    assert content_box(m) == (28, 18, 82, 42)
    m2 = np.zeros((10, 10), bool)
    m2[0:5, 0:10] = True            # at the edge: the margin reaches past it (the crop pads with white)
    assert content_box(m2) == (-1, -1, 11, 6)
    assert content_box(np.zeros((5, 5), bool)) is None


def test_a_glyph_at_four_positions_and_two_scales_frames_the_same():
    small, large = _glyph(40), _glyph(80)
    views = [_placed(small, at=a) for a in [(0, 0), (160, 110), (5, 100), (120, 3)]]
    views += [_placed(large, canvas=(300, 200), at=a) for a in [(10, 10), (200, 100)]]
    framed = [_framed(v) for v in views]
    diffs = [float(np.abs(f - framed[0]).mean()) for f in framed[1:]]
    # the same picture up to resampling: a mean absolute difference of a few levels out of 255
    assert max(diffs) < 6.0
    # without framing the same two placements differ far more
    lb = [square_pixels(v, PreprocessSpec(size=128, framing="letterbox")).astype(np.float32) for v in views[:2]]
    assert np.abs(lb[0] - lb[1]).mean() > 2 * max(diffs)


def test_transparent_white_and_coloured_borders_give_the_same_crop():
    g = _glyph(50)
    alpha = Image.new("RGBA", (160, 120), (0, 0, 0, 0))
    mask = Image.new("L", g.size, 0)
    ImageDraw.Draw(mask).ellipse([0, 0, 49, 49], fill=255)
    alpha.paste(g.convert("RGBA"), (90, 10), mask)
    buf = io.BytesIO()
    alpha.save(buf, "PNG")
    white = _placed(g, canvas=(160, 120), at=(90, 10))
    rng = np.random.default_rng(0)
    coloured = np.asarray(_placed(g, canvas=(160, 120), at=(90, 10), colour=(40, 160, 90)), np.float32)
    backdrop = np.all(coloured == (40, 160, 90), axis=2)
    coloured[backdrop] += rng.normal(0, 4, (int(backdrop.sum()), 3))   # sensor noise on the backdrop only
    coloured = Image.fromarray(np.clip(coloured, 0, 255).astype(np.uint8))
    a, w, c = _framed(buf.getvalue()), _framed(white), _framed(coloured)
    assert np.abs(a - w).mean() < 6.0
    assert np.abs(c - w).mean() < 8.0
    # the coloured backdrop became white: the corners of the framed picture are white
    assert c[0, 0].min() > 240 and c[-1, -1].min() > 240


def test_a_gradient_backdrop_is_modelled_and_whitened():
    h, w = 120, 160
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    grad = (np.array([200, 80, 40], np.float32) + x * np.array([-150, 100, 180], np.float32)) * np.ones((h, 1, 1))
    b = fit_backdrop(grad)
    assert b.noise < 1.0 and np.abs(b.at(np.arange(w), np.arange(h)) - grad).max() < 1.0
    im = Image.fromarray(grad.astype(np.uint8))
    im.paste(_glyph(40), (20, 40))
    f = _framed(im)
    assert f[0, 0].min() > 240 and f[-1, -1].min() > 240


def test_a_photograph_like_picture_is_left_as_it_is():
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    assert fit_backdrop(np.asarray(photo, np.float32)) is None
    assert frame_content(photo, 64) is photo


def test_an_empty_picture_stays_a_valid_query():
    for colour in [(255, 255, 255), (30, 90, 200)]:
        blank = Image.new("RGB", (50, 70), colour)
        out = frame_content(blank, 64)
        assert out.size == (50, 70)
        px = square_pixels(blank, PreprocessSpec(size=64))
        assert px.shape == (64, 64, 3) and px.dtype == np.uint8
    clear = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    assert square_pixels(clear, PreprocessSpec(size=32)).min() == 255


def test_a_large_coloured_picture_is_cropped_at_full_resolution():
    """A 150 px icon in a 1200 x 2400 screenshot on blue comes out as large as on white."""
    icon = _glyph(150)
    crops = []
    for colour in [(255, 255, 255), (40, 90, 200)]:
        c = _placed(icon, canvas=(1200, 2400), at=(700, 1500), colour=colour)
        crops.append(frame_content(c, 128))
    assert abs(crops[0].size[0] - crops[1].size[0]) <= 6 and crops[1].size[0] >= 150
    assert np.asarray(crops[1])[0, 0].min() > 240      # the blue became white


def test_a_nearly_opaque_picture_is_framed_by_its_colours():
    """Rounded corners (a screenshot) make alpha < 255 at the edges: the colours still frame it."""
    rgba = _placed(_glyph(40), canvas=(200, 150), at=(150, 100), colour=(40, 160, 90)).convert("RGBA")
    a = np.asarray(rgba).copy()
    a[0, 0, 3] = a[-1, -1, 3] = 0
    framed = frame_content(Image.fromarray(a, "RGBA"), 128)
    assert framed.size[0] < 60 and framed.size[1] < 60


def test_tiny_and_huge_pictures():
    assert square_pixels(Image.new("RGB", (1, 1), (0, 0, 0)), PreprocessSpec(size=32)).shape == (32, 32, 3)
    big = _placed(_glyph(300), canvas=(2000, 1500), at=(1500, 1000))
    assert np.abs(_framed(big) - _framed(_placed(_glyph(300), canvas=(2000, 1500), at=(100, 50)))).mean() < 6.0


def test_old_bundles_keep_the_letterbox():
    spec = PreprocessSpec.from_dict({"size": 64, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert spec.framing == "letterbox"
    assert PreprocessSpec().framing == "content"
    assert PreprocessSpec.from_dict(PreprocessSpec(size=64).to_dict()).framing == "content"
    with pytest.raises(ValueError, match="framing"):
        PreprocessSpec(framing="zoom")


def _shape(kind: int, side: int = 60) -> Image.Image:
    """Six different two-colour drawings on white."""
    im = Image.new("RGB", (side, side), (255, 255, 255))
    d = ImageDraw.Draw(im)
    colours = [(220, 40, 40), (40, 160, 60), (40, 60, 220)]
    c = colours[kind % 3]
    if kind < 3:
        d.ellipse([0, 0, side - 1, side - 1], fill=c)
    else:
        d.polygon([(0, side - 1), (side // 2, 0), (side - 1, side - 1)], fill=c)
    d.rectangle([side // 3, side // 3, side // 2, side - 5], fill=(20, 20, 20))
    return im


def test_a_shifted_copy_is_nearest_to_its_original():
    """What the encoder sees (the preprocessed pixels) of a moved, rescaled copy on a coloured,
    noisy backdrop is closer to its original than to any other item; without framing it is not."""
    rng = np.random.default_rng(0)
    items = [_shape(k) for k in range(6)]
    copies = []
    for k, im in enumerate(items):
        canvas = np.full((180, 240, 3), (90, 140, 200), np.float32) + rng.normal(0, 4, (180, 240, 3))
        c = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        small = im.resize((44, 44), Image.Resampling.LANCZOS)
        mask = Image.fromarray(((np.asarray(small).min(axis=2) < 250) * 255).astype(np.uint8))
        c.paste(small, (int(rng.integers(0, 190)), int(rng.integers(0, 130))), mask)
        copies.append(c)

    def unit(spec, pics):
        v = np.stack([square_pixels(p, spec).astype(np.float32).ravel() for p in pics])
        v -= v.mean(axis=0)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    for framing, expect_all in (("content", True), ("letterbox", False)):
        spec = PreprocessSpec(size=64, framing=framing)
        sims = unit(spec, copies) @ unit(spec, items).T
        hits = np.argmax(sims, axis=1) == np.arange(6)
        assert hits.all() if expect_all else not hits.all()
