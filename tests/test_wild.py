"""Wild queries (uem.eval.wild) and the harness's wild protocol."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from uem.eval.harness import evaluate
from uem.datasets.backdrops import cut_out, texture_images
from uem.eval.wild import TEXTURES, VARIANTS, _rng, wild_copy, write_wild_copies


def _icon(colour=(200, 30, 30), side=64) -> Image.Image:
    im = Image.new("RGB", (side, side), (255, 255, 255))
    d = ImageDraw.Draw(im)
    d.ellipse([8, 8, side - 9, side - 9], fill=colour)
    d.ellipse([24, 24, 34, 34], fill=(255, 255, 255))   # a white eye inside the drawing
    return im


def test_cut_out_keeps_white_inside_the_drawing():
    rgba = np.asarray(cut_out(_icon()))
    assert rgba[0, 0, 3] == 0                 # the white around it is clear
    assert rgba[29, 29, 3] == 255             # the white eye inside stays opaque
    assert rgba[32, 50, 3] == 255             # the red disc too


@pytest.mark.parametrize("variant", VARIANTS)
def test_wild_copy_is_deterministic_and_keeps_the_content_inside(variant):
    textures = texture_images(TEXTURES) if variant == "background" else ()
    a, qa = wild_copy(_icon(), variant, _rng(3, variant, "x/y.png"), textures)
    b, qb = wild_copy(_icon(), variant, _rng(3, variant, "x/y.png"), textures)
    c, _ = wild_copy(_icon(), variant, _rng(4, variant, "x/y.png"), textures)
    assert qa == qb and 70 <= qa <= 92
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert a.size != c.size or not np.array_equal(np.asarray(a), np.asarray(c))
    w, h = a.size
    assert 256 <= max(w, h) <= 400 and 0.74 <= w / h <= 1.34
    # the red disc is all there: as many strongly red pixels as the scaled disc has (55-85 % of the
    # shorter side for the 48 px disc's 64 px picture -> at least a disc of diameter ~0.41 x min side)
    arr = np.asarray(a).astype(int)
    red = (arr[..., 0] > 150) & (arr[..., 1] < 90) & (arr[..., 2] < 90)
    d = 0.55 * min(w, h) * 48 / 64 * 0.8
    assert red.sum() > 0.7 * np.pi * (d / 2) ** 2
    ys, xs = np.nonzero(red)
    assert ys.min() > 0 and xs.min() > 0 and ys.max() < h - 1 and xs.max() < w - 1


def test_write_wild_copies_names_and_reuse(tmp_path):
    root = tmp_path / "data"
    src = root / "dom" / "cat" / "1f600.png"
    src.parent.mkdir(parents=True)
    _icon().save(src)
    out = write_wild_copies([src], root, tmp_path / "wild", "reframed", seed=0)
    assert out[0] == tmp_path / "wild" / "v1-seed0" / "reframed" / "dom" / "cat" / "1f600.png.jpg"
    first = out[0].read_bytes()
    assert Image.open(out[0]).format == "JPEG"
    again = write_wild_copies([src], root, tmp_path / "wild", "reframed", seed=0)
    assert again[0].read_bytes() == first


def test_harness_scores_wild_queries_against_the_gallery_as_indexed(tmp_path):
    """Identity is found through the wild copies' own pictures: an embedding that reads the
    colour of the picture's most saturated pixels finds the same-coloured item."""
    colours = {"r": (220, 30, 30), "g": (30, 200, 40), "b": (30, 40, 220)}
    for dom in ("a", "b"):
        for ident, col in colours.items():
            p = tmp_path / dom / f"cat{ident}" / f"{ident}.png"
            p.parent.mkdir(parents=True)
            _icon(col).save(p)

    def embed(paths):
        out = []
        for p in paths:
            arr = np.asarray(Image.open(p).convert("RGB"), np.float32).reshape(-1, 3)
            sat = arr.max(axis=1) - arr.min(axis=1)
            out.append(arr[sat > 100].mean(axis=0) - 128.0)
        return np.stack(out)

    res = evaluate(embed, tmp_path, pairs=["a->b"], queries="wild", wild_dir=tmp_path / "w")
    assert res["queries"] == "wild"
    for variant in VARIANTS:
        p = res["wild"][variant]["pairs"][0]
        assert p["pair"] == "a->b" and p["n_queries"] == 3
        assert 0.0 <= p["top1_identity"] <= 1.0
        assert all(Path(e["query"]).suffix == ".jpg" for e in p["examples"])
    # on white the colour embedding still tells the three apart (a busy backdrop may not)
    assert res["wild"]["reframed"]["pairs"][0]["top1_identity"] == 1.0
    assert (tmp_path / "w" / "v1-seed0" / "background" / "a" / "catr" / "r.png.jpg").is_file()
    with pytest.raises(ValueError, match="queries"):
        evaluate(embed, tmp_path, queries="blurry")
