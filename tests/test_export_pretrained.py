"""`uemctl export --pretrained DATA` (a bundle without training) and `uemctl index realign`, end to
end on tiny images; the one-line errors of both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from test_export import COLOURS, SHAPES, _draw
from uem.cli.app import main
from uem.engine import Engine
from uem.engine.bundle import read_bundle
from uem.eval.engine_scores import pair_scores


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, err, needle):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0] and "Traceback" not in err, err


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    for domain, filled in (("paint", True), ("line", False)):  # six shapes, filled or outlined
        for shape in SHAPES:
            (root / "data" / domain / shape).mkdir(parents=True)
            for i, colour in enumerate(COLOURS):
                _draw(shape, colour, filled, jitter=2 * i).save(root / "data" / domain / shape / f"{i}.png")
    out = root / "model.uem"
    code = main(["export", "--pretrained", str(root / "data"), "-o", str(out), "--size", "64",
                 "--calib", "8", "-q", "--csls-k", "3", "--csls-candidates", "6"])
    assert code == 0
    return root, out


def test_pretrained_bundle_is_the_pooled_trunk_aligned(pretrained):
    _, out = pretrained
    info = read_bundle(out)
    assert info.embed_dim == 2 * 192  # block 13's 192 channels, image + line drawing
    assert info.extra["pretrained"] is True and info.extra["source_run"] is None
    assert info.extra["train_config"]["model"]["head"] == "pooled"
    assert info.alignment.kind == "whiten" and info.alignment.csls.k == 3
    assert {d: c.count for d, c in info.domains.items()} == {"line": 18, "paint": 18}


def test_pretrained_bundle_answers_queries_across_domains(pretrained):
    root, out = pretrained
    right = 0
    with Engine.open(out) as eng:
        for shape in SHAPES:
            r = eng.query(root / "data" / "paint" / shape / "1.png", "line", k=3, no_reject=True)
            assert r.source == "paint" and len(r.hits) == 3
            right += Path(r.hits[0].path).parent.name == shape
    assert right >= 4, right  # chance: 1 in 6


def test_realign_refits_without_re_embedding(pretrained, tmp_path, capsys):
    import shutil

    _, out = pretrained
    copy = tmp_path / "copy.uem"
    shutil.copytree(out, copy)
    before = read_bundle(copy)
    code, text, err = run(capsys, "index", "realign", copy, "--align", "mean", "--no-maps", "--csls-k", "0")
    assert code == 0, err
    assert "realigned (mean, 0 maps, CSLS k 0)" in text
    after = read_bundle(copy)
    assert after.generation == before.generation + 1 and after.alignment.kind == "mean"
    assert not after.alignment.maps and not after.alignment.csls.enabled
    for d in before.domains:  # raw vectors and encoder kept byte for byte
        assert after.domains[d].vectors.sha256 == before.domains[d].vectors.sha256
    assert after.encoder.sha256 == before.encoder.sha256
    info_text = run(capsys, "info", copy)[1]
    assert "alignment    per-domain mean; maps: none; cosine ranking" in info_text
    with Engine.open(copy) as eng:
        raw = after.load_vectors("paint", mmap=False)
        np.testing.assert_allclose(pair_scores(eng, raw, "paint", "line", after.load_vectors("line", mmap=False)),
                                   after.alignment.align(raw, "paint") @ after.aligned_vectors("line").T, atol=1e-5)


def test_export_one_line_errors(pretrained, tmp_path, capsys):
    root, _ = pretrained
    one_line_error(*run(capsys, "export", "-o", tmp_path / "x.uem")[::2], "one of the two")
    one_line_error(*run(capsys, "export", "--pretrained", root / "data", "-o", tmp_path / "x.uem",
                        "--block", "16")[::2], "--block must be 0..15")
    one_line_error(*run(capsys, "export", "--pretrained", root / "data", "-o", tmp_path / "x.uem",
                        "--align", "pca")[::2], "alignment must be one of")
    one_line_error(*run(capsys, "export", "--pretrained", tmp_path / "nothing", "-o", tmp_path / "x.uem")[::2],
                   "no such data folder")
    one_line_error(*run(capsys, "index", "realign", tmp_path / "nothing.uem")[::2], "nothing.uem")
