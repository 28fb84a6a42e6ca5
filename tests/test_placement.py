"""Placed views (uem.train.placement): a training picture moved onto a backdrop and framed again."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from uem.engine import PreprocessSpec
from uem.engine.preprocess import square_pixels
from uem.eval.wild import TEXTURES
from uem.train.augment import AugmentConfig, augment
from uem.train.placement import BACKDROPS, TRAIN_TEXTURES, placed_view, synthetic_backdrop


def _icon() -> np.ndarray:
    im = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(im).ellipse([6, 6, 57, 57], fill=(200, 30, 30))
    return square_pixels(im, PreprocessSpec(size=64))


@pytest.mark.parametrize("photos", [False, True])
def test_placed_view_is_deterministic_and_keeps_the_picture(photos):
    px = _icon()
    a = placed_view(px, np.random.default_rng(5), photos=photos)
    b = placed_view(px, np.random.default_rng(5), photos=photos)
    assert a.shape == px.shape and a.dtype == np.uint8 and np.array_equal(a, b)
    # the red disc is still there and large: framing cropped the backdrop away where it could
    red = (a[..., 0] > 150) & (a[..., 1] < 90) & (a[..., 2] < 90)
    assert red.mean() > 0.15


def test_every_backdrop_kind_is_drawn_at_its_size():
    rng = np.random.default_rng(0)
    for _ in range(4 * (len(BACKDROPS) + 1)):
        bg = synthetic_backdrop(90, 70, rng, photos=True)
        assert bg.size == (90, 70) and bg.mode == "RGB"


def test_training_never_sees_the_benchmark_backgrounds():
    assert not set(TRAIN_TEXTURES) & set(TEXTURES)


def test_place_p_chooses_the_path_and_is_validated():
    px = _icon()
    colour_only = dict(style_p=(1, 0, 0, 0, 0), stroke_p=0.0)
    differ = 0
    for i in range(10):
        placed = augment(px, AugmentConfig(place_p=1.0, **colour_only), np.random.default_rng(i))
        cropped = augment(px, AugmentConfig(place_p=0.0, **colour_only), np.random.default_rng(i))
        assert placed.shape == cropped.shape == px.shape
        differ += not np.array_equal(placed, cropped)
    assert differ == 10
    with pytest.raises(ValueError, match="place_p"):
        AugmentConfig(place_p=1.5)
    with pytest.raises(ValueError, match="place_photos"):
        AugmentConfig(place_photos="yes")
