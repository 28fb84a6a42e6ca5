"""The phosphor4 builder on two categories, 3 icons each: layout, framing, determinism, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("py_phosphor_icons")
pytest.importorskip("resvg_py")

from uem.cli.app import main  # noqa: E402
from uem.datasets import phosphor as ph  # noqa: E402
from uem.datasets.phosphor import (DOMAINS, Source, build_phosphor4, read_icons,  # noqa: E402
                                   read_manifest)
from uem.engine.errors import DataError  # noqa: E402

CATEGORIES = ["time", "weather-nature"]
LIMIT = 3


def _build(out: Path, **kw):
    kw.setdefault("categories", CATEGORIES)
    kw.setdefault("limit", LIMIT)
    return build_phosphor4(out, workers=1, show_progress=False, **kw)


@pytest.fixture(scope="module")
def family():
    return read_icons(Source.locate())


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("p4") / "phosphor4"
    _build(out)
    return out


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_family_metadata(family):
    icons, left_out, left_categories = family
    assert 1000 <= len(icons) <= 2000  # py-phosphor-icons 0.1.1: 1511 of 1512 (book-user has no category)
    assert len({i.name for i in icons}) == len(icons)
    sizes = {c: sum(i.category == c for i in icons) for c in {i.category for i in icons}}
    assert min(sizes.values()) >= ph.MIN_PER_CATEGORY and len(sizes) >= 10
    assert {"time", "weather-nature", "arrows"} <= set(sizes)
    assert all(c == c.lower() and " " not in c and "&" not in c for c in sizes)
    by_name = {i.name: i for i in icons}
    # figma_category, not the alphabetically first of 'categories' (acorn: Finance, Nature)
    assert by_name["acorn"].category == "weather-nature"
    assert by_name["acorn"].category_name == "Weather & Nature"
    assert {x["identity"] for x in left_out} == {"book-user"}
    assert left_categories == []


def test_layout_and_manifest(built, family):
    icons = family[0]
    expected = {f"{i.category}/{i.name}.png" for c in CATEGORIES
                for i in [i for i in icons if i.category == c][:LIMIT]}
    assert len(expected) == len(CATEGORIES) * LIMIT
    m = read_manifest(built)
    assert m is not None and m["complete"] is True and m["format"] == "phosphor4"
    assert sorted(p.name for p in built.iterdir() if p.is_dir()) == sorted(DOMAINS)
    assert [p.name for p in built.iterdir() if p.is_file()] == ["phosphor4.json"]
    for d in DOMAINS:
        files = {p.relative_to(built / d).as_posix() for p in (built / d).rglob("*.png")}
        assert files == expected, d  # the same identities in every domain
        assert m["counts"][d] == len(files)
    assert m["selection"] == {"categories": sorted(CATEGORIES), "limit": LIMIT}
    assert m["domains"] == list(DOMAINS) and m["icons"] == len(expected)
    assert m["categories"] == {c: {d: LIMIT for d in DOMAINS} for c in sorted(CATEGORIES)}
    assert m["category_names"] == {"time": "Time", "weather-nature": "Weather & Nature"}
    assert m["sources"]["py-phosphor-icons"] == "0.1.1" and m["sources"]["phosphor"] == "v2.1.0"
    assert m["sources"]["resvg-py"] != "not installed"
    assert m["left_out"] == [] and m["left_out_categories"] == []  # book-user is in no selected category


def test_images_are_framed_and_the_styles_differ(built):
    ink = {d: [] for d in DOMAINS}
    for p in sorted(built.rglob("*.png")):
        im = Image.open(p)
        assert im.size == (128, 128) and im.mode == "RGB", p
        grey = np.asarray(im.convert("L"))
        assert grey[:8].min() == grey[-8:].min() == grey[:, :8].min() == grey[:, -8:].min() == 255, p  # margin
        assert (grey < 128).mean() > 0.01, p  # something is drawn
        assert (grey < 128).mean() < 0.7, p  # and it is not a black square
        domain = p.relative_to(built).parts[0]
        ink[domain].append((grey < 128).mean())
        if domain != "duotone":
            rgb = np.asarray(im).astype(int)
            assert np.abs(rgb - rgb[..., :1]).max() == 0, p  # black on white
    mean = {d: float(np.mean(v)) for d, v in ink.items()}
    assert mean["thin"] < mean["duotone"] < mean["bold"] < mean["fill"]
    # duotone: the 20 % grey fill under the outline
    g = np.asarray(Image.open(built / "duotone/time/alarm.png").convert("L"))
    assert ((g > 190) & (g < 220)).mean() > 0.05


def test_two_builds_give_identical_bytes(built, tmp_path):
    again = tmp_path / "again"
    _build(again)
    assert _files(built) == _files(again)
    assert all((built / r).read_bytes() == (again / r).read_bytes() for r in _files(built))


def test_category_names_as_in_the_metadata(tmp_path):
    r = _build(tmp_path / "n", categories=["Weather & Nature"], limit=1)
    assert read_manifest(tmp_path / "n")["selection"] == {"categories": ["weather-nature"], "limit": 1}
    assert r.categories == 1 and set(r.counts.values()) == {1}


def test_refuses_non_empty_dir_and_force_replaces(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a phosphor4 set.*--force"):
        _build(out, categories=["time"], limit=1)
    assert (out / "notes.txt").read_text() == "keep me"
    r = _build(out, categories=["time"], limit=1, force=True)
    assert not r.already_built and not (out / "notes.txt").exists()
    again = _build(out, categories=["time"], limit=1)
    assert again.already_built and again.counts == r.counts
    with pytest.raises(DataError, match="different selection"):
        _build(out, categories=["time"], limit=2)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temp folders left behind


def test_bad_selection_is_a_clear_data_error(tmp_path):
    with pytest.raises(DataError, match=r"unknown icon category.*'weather-natur' \(did you mean 'weather-nature'\?\)"):
        _build(tmp_path / "x", categories=["time", "weather-natur"])
    with pytest.raises(DataError, match="unknown icon category.*'dinosaurs'.*there are"):
        _build(tmp_path / "x", categories=["dinosaurs"])
    with pytest.raises(DataError, match="--limit must be at least 1"):
        _build(tmp_path / "x", limit=0)
    assert list(tmp_path.iterdir()) == []


def test_an_icon_that_fails_in_one_weight_is_left_out_of_all(tmp_path, monkeypatch):
    real = ph._render

    def flaky(task):
        domain, i = task
        if domain == "fill" and ph._STATE["icons"][i].name == "alarm":
            return domain, i, None, "empty drawing"
        return real(task)

    monkeypatch.setattr(ph, "_render", flaky)
    r = _build(tmp_path / "f", categories=["time"])
    assert r.counts == {d: LIMIT - 1 for d in DOMAINS}
    assert not list((tmp_path / "f").rglob("alarm.png"))
    assert r.left_out == [{"identity": "alarm", "category": "time", "reason": "fill: empty drawing"}]


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def boom(task):
        calls.append(task)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(task)

    real = ph._render
    monkeypatch.setattr(ph, "_render", boom)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "half")
    assert list(tmp_path.iterdir()) == []


def test_cli_builds_reports_and_refuses(tmp_path, capsys, built):
    assert main(["data", "icons", "--out", str(built), "--categories", ",".join(CATEGORIES),
                 "--limit", str(LIMIT)]) == 0
    cap = capsys.readouterr()
    assert "already holds a complete phosphor4 set" in cap.err
    assert all(f"{d}" in cap.out for d in DOMAINS) and "2 categories" in cap.out

    assert main(["data", "icons", "--out", str(tmp_path / "n"), "--categories", "tme"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uemctl: error:") and "did you mean 'time'" in err[0]

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    assert main(["data", "icons", "--out", str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
