"""A format-3 bundle end to end: content framing at index and query time, probes kept by realign
and by adds, and refused when they name items the bundle does not have."""

import json

import numpy as np
import pytest
from PIL import Image

from uem.engine import Engine, PreprocessSpec
from uem.engine.bundle import read_bundle
from uem.engine.errors import BundleError
from uem.export.align import AlignConfig, fit_alignment
from uem.export.realign import realign_bundle
from uem.testing.bundles import COLOURS, make_bundle

CONTENT = PreprocessSpec(size=32, framing="content")
ALIGN = AlignConfig(kind="whiten", shrinkage=0.5, csls_k=3, csls_candidates=8)


def _with_probes(tmp_path, rows=(0, 2, 4)):
    plain = make_bundle(tmp_path / "plain", spec=CONTENT)
    info = read_bundle(plain)
    vecs = {d: info.load_vectors(d, mmap=False) for d in info.domains}
    probes = {"sketch": vecs["sketch"][[0, 1, 2]] * 0.9 + 0.1 / np.sqrt(8)}
    alignment, _ = fit_alignment(vecs, ALIGN, probes=probes, probe_rows={"sketch": np.array(rows)})
    return make_bundle(tmp_path / "b", spec=CONTENT, alignment=alignment)


def _off_centre(colour: str, backdrop=(255, 255, 255)) -> Image.Image:
    canvas = Image.new("RGB", (160, 120), backdrop)
    canvas.paste(Image.new("RGB", (30, 30), COLOURS[colour]), (110, 70))
    return canvas


def test_a_content_bundle_frames_its_queries_and_records_version_3(tmp_path):
    b = _with_probes(tmp_path)
    m = json.loads((b / "manifest.json").read_text())
    assert m["format_version"] == 3 and m["model"]["preprocess"]["framing"] == "content"
    assert m["alignment"]["probes"] == {"sketch": 3}
    with Engine.open(b) as eng:
        assert eng.snapshot().info.preprocess.framing == "content"
        for colour in ("red", "blue"):     # a small square far off-centre finds its colour
            r = eng.query(_off_centre(colour), "sketch", k=1, source="sketch")
            assert r.hits[0].id.split("/")[1] == colour


def test_realign_and_add_keep_the_probes(tmp_path):
    b = _with_probes(tmp_path)
    before = read_bundle(b).alignment
    realign_bundle(b)
    after = read_bundle(b).alignment
    assert np.array_equal(after.probes["sketch"], before.probes["sketch"])
    assert after.probe_rows["sketch"].tolist() == [0, 2, 4]
    new = tmp_path / "new.png"
    _off_centre("red").save(new)
    with Engine.open(b) as eng:
        assert eng.add("sketch", [new]) == 1
    info = read_bundle(b)
    assert info.alignment.probe_rows["sketch"].tolist() == [0, 2, 4] and info.domains["sketch"].count == 13


def test_probes_that_name_missing_items_are_refused(tmp_path):
    with pytest.raises(BundleError, match="probes"):
        read_bundle(_with_probes(tmp_path, rows=(0, 2, 99)))
