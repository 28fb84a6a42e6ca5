"""Resource limits: `uemctl query` streams (results are printed while the input
walk is still going), bombs are refused from their header (tests/test_reliability_fuzz.py corpus:
huge PNG IHDR, GIF and BMP dims), long paths up to and beyond PATH_MAX and file names that are not
UTF-8 or hold control characters never crash and keep one line per result / error.
The 10k-file peak-RSS measurement: benchmarks/reliability.py --stream-files N.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from uem.cli import query as query_cli
from uem.cli.app import main
from uem.engine import Engine
from uem.testing.bundles import make_bundle


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("limits"))


def red_png(base: Path) -> Path:
    return base.parent / "data" / "photo" / "red" / "0.png"


@pytest.mark.parametrize("as_json", [False, True])
def test_query_streams_results_while_walking(base, tmp_path, capsys, monkeypatch, as_json):
    """By the time the walk hands over file 100, results of the first ones are already out."""
    src = red_png(base)
    files = []
    for i in range(120):
        files.append(tmp_path / f"{i:04d}.png")
        shutil.copy(src, files[-1])
    printed_before = []

    def walk(_args):
        for i, f in enumerate(files):
            if i == 100:
                text = capsys.readouterr().out
                printed_before.append(text.count('"accepted"') if as_json else text.count(" -> sketch"))
                print(text, end="")  # put it back for the final check
            yield f
    monkeypatch.setattr(query_cli, "iter_images", walk)
    code = main(["query", str(tmp_path), "--domain", "sketch", "--bundle", str(base), "--threads", "1",
                 *(["--json"] if as_json else [])])
    out = capsys.readouterr().out
    assert code == 0
    assert printed_before and printed_before[0] >= 64  # whole batches of 32, before the walk ended
    total = len(json.loads(out)["results"]) if as_json else out.count(" -> sketch")
    assert total == 120


def test_names_with_newlines_and_escapes_stay_on_one_line(base, tmp_path, capsys):
    good = [tmp_path / "new\nline.png", tmp_path / "esc\x1b[31m.png", tmp_path / os.fsdecode(b"\xff\xfe.png")]
    for p in good:
        shutil.copy(red_png(base), p)
    bad = tmp_path / os.fsdecode(b"bad\n\xff.png")
    bad.write_bytes(b"not an image")
    code = main(["query", *map(str, good), str(bad), "--domain", "sketch", "--bundle", str(base)])
    out, err = capsys.readouterr()
    assert code == 2
    heads = [line for line in out.splitlines() if " -> sketch" in line]
    assert len(heads) == 3 and "new\\x0aline.png" in heads[0] and "\x1b" not in out
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("uemctl: error: ") and "bad\\x0a\ufffd.png" in lines[0]


def test_paths_near_and_beyond_path_max(base, tmp_path, capsys):
    deep = tmp_path
    while len(str(deep)) + 256 < 4000:
        deep = deep / ("d" * 250)  # components near NAME_MAX
    deep.mkdir(parents=True)
    near = deep / ("f" * 250 + ".png")
    shutil.copy(red_png(base), near)
    assert len(str(near)) > 3800
    fd = os.open(deep, os.O_RDONLY)  # a file whose full path exceeds PATH_MAX (4096)
    os.mkdir("x" * 200, dir_fd=fd)
    os.close(fd)
    fd = os.open(deep / ("x" * 200), os.O_RDONLY)
    with open(os.open("y" * 200 + ".png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
        f.write(red_png(base).read_bytes())
    os.close(fd)
    beyond = deep / ("x" * 200) / ("y" * 200 + ".png")
    assert len(str(beyond)) > 4096
    code = main(["query", str(near), "--domain", "sketch", "--bundle", str(base), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["results"][0]["accepted"], err
    for arg in (beyond, deep / ("x" * 200)):  # named, and found by walking its folder
        code = main(["query", str(arg), "--domain", "sketch", "--bundle", str(base)])
        out, err = capsys.readouterr()
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and "File name too long" in lines[0], err
    b = tmp_path / "model.uem"
    shutil.copytree(base, b)
    code = main(["index", "add", str(b), str(near), "--domain", "photo"])
    out, err = capsys.readouterr()
    assert code == 0 and "added 1 images" in out, err
    assert str(near) in {it["id"] for it in Engine.open(b).snapshot().info.domains["photo"].items}
    code = main(["index", "add", str(b), str(beyond), "--domain", "photo"])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.splitlines()) == 1 and "File name too long" in err


def test_pixel_limit_counts_decoded_pixels():
    """A 45 MP JPEG decodes at 1/8 scale for a 32 px model, so it passes; decoding it in full, or a
    PNG declaring 45 MP, is refused before any pixel is decoded."""
    import io

    import numpy as np
    from PIL import Image

    from uem.testing.bundles import SPEC
    from uem.engine import ImageError, load_image
    from uem.engine.preprocess import MAX_PIXELS, square_pixels

    from uem.testing import reliability as rk

    buf = io.BytesIO()
    Image.new("RGB", (9000, 5000), (220, 30, 30)).save(buf, "JPEG", quality=50)
    assert 9000 * 5000 > MAX_PIXELS
    px = square_pixels(buf.getvalue(), SPEC)
    assert px.shape == (SPEC.size, SPEC.size, 3) and np.abs(px[SPEC.size // 2, 0].astype(int) - (220, 30, 30)).max() < 12
    with pytest.raises(ImageError, match="too large"):
        load_image(buf.getvalue())
    with pytest.raises(ImageError, match="too large"):
        square_pixels(rk.png_with_header(9000, 5000), SPEC)
