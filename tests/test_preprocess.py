import io

import numpy as np
import pytest
from PIL import Image

from uem.engine import ImageError, PreprocessSpec, load_image, preprocess, preprocess_batch
from uem.engine.preprocess import fit_square, square_pixels


def _png(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    im.putpixel((0, 0), (255, 0, 0, 255))
    rgb = np.asarray(load_image(_png(im)))
    assert rgb[0, 0].tolist() == [255, 0, 0]
    assert rgb[3, 3].tolist() == [255, 255, 255]


def test_palette_with_transparency_and_16bit_and_cmyk():
    p = Image.new("P", (3, 3), 0)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.info["transparency"] = 0
    assert np.asarray(load_image(_png(p, transparency=0)))[1, 1].tolist() == [255, 255, 255]
    i16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert np.asarray(load_image(i16))[0, 0].tolist() == [255, 255, 255]
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    assert load_image(cmyk).mode == "RGB"


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (4, 2), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _png(im, "JPEG", exif=exif.tobytes())
    assert load_image(data).size == (2, 4)


def test_fit_square_keeps_aspect_on_white():
    im = Image.new("RGB", (64, 32), (0, 0, 0))
    sq = np.asarray(fit_square(im, 32))
    assert sq.shape == (32, 32, 3)
    assert sq[0, 16].tolist() == [255, 255, 255]  # padding band above
    assert sq[16, 16].tolist() == [0, 0, 0]


def test_preprocess_normalises_with_spec():
    spec = PreprocessSpec(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = preprocess(Image.new("RGB", (10, 10), (255, 255, 255)), spec)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    assert np.allclose(x, 1.0)
    b = preprocess_batch([Image.new("RGB", (5, 7))] * 3, spec)
    assert b.shape == (3, 3, 32, 32)


@pytest.mark.parametrize("data, msg", [
    (b"", "empty"),
    (b"hello, not an image", "not an image"),
])
def test_bad_bytes_raise_image_error(data, msg):
    with pytest.raises(ImageError, match=msg):
        load_image(data)


def test_truncated_png_and_missing_file(tmp_path):
    full = _png(Image.effect_noise((64, 64), 50))
    with pytest.raises(ImageError):
        load_image(full[: len(full) // 2])
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)


def test_pixel_limit_guards_decompression_bombs():
    big = _png(Image.new("L", (3000, 3000)))
    with pytest.raises(ImageError, match="too large"):
        load_image(big, max_pixels=1_000_000)


def test_spec_rejects_sizes_the_backbone_cannot_pad_exactly():
    with pytest.raises(ValueError):
        PreprocessSpec(size=100)


def test_square_pixels_of_a_square_image_is_a_resize():
    im = Image.effect_noise((16, 16), 40).convert("RGB")
    spec = PreprocessSpec(size=32)
    expect = np.asarray(im.resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(square_pixels(im, spec), expect)
