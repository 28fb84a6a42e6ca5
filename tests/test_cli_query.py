"""`uemctl query`, `uemctl index add`, `uemctl info`: results, JSON, sheets, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from uem.cli.app import main
from uem.engine import Engine
from uem.testing.bundles import make_bundle


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("cli"))


def data(base: Path) -> Path:
    return base.parent / "data"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, needle):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uemctl: error:") and needle in lines[0], err
    assert "Traceback" not in err


def test_query_text(base, capsys):
    d = data(base)
    code, out, err = run(capsys, "query", d / "photo/red/0.png", d / "photo/green/0.png",
                         "--domain", "sketch", "-k", "2", "--bundle", base)
    assert code == 0, err
    assert "red/0.png -> sketch: accepted" in out and "REJECTED" in out
    assert "nearest concept exists only in photo" in out
    assert out.count("sketch/red/") == 2


def test_query_json_is_well_formed(base, capsys):
    d = data(base)
    code, out, _ = run(capsys, "query", d / "photo", "--domain", "sketch", "-k", "3", "--json",
                       "--bundle", base)
    assert code == 0
    doc = json.loads(out)
    assert doc["domain"] == "sketch" and doc["k"] == 3 and doc["errors"] == 0
    assert len(doc["results"]) == 12  # the directory was walked
    verdict = {Path(r["query"]).parent.name: r["accepted"] for r in doc["results"]}
    assert verdict == {"red": True, "green": False}
    red = next(r for r in doc["results"] if r["accepted"])
    assert len(red["hits"]) == 3 and set(red["hits"][0]) == {"id", "path", "score", "rank_score"}


def test_no_reject_and_from(base, capsys):
    d = data(base)
    code, out, _ = run(capsys, "query", d / "photo/green/1.png", "--domain", "sketch", "--json",
                       "--no-reject", "--from", "photo", "-k", "4", "--bundle", base)
    r = json.loads(out)["results"][0]
    assert code == 0 and not r["accepted"] and len(r["hits"]) == 4 and r["source"] == "photo"


def test_sheet_writes_a_png(base, tmp_path, capsys):
    d = data(base)
    sheet = tmp_path / "sheet.png"
    code, _, err = run(capsys, "query", d / "photo/red/1.png", d / "photo/green/1.png", "--domain",
                       "sketch", "-k", "3", "--sheet", sheet, "--bundle", base)
    assert code == 0 and "contact sheet" in err
    with Image.open(sheet) as im:
        assert im.format == "PNG" and im.width > 3 * 96 and im.height > 2 * 96


def test_bundle_from_environment(base, capsys, monkeypatch):
    monkeypatch.setenv("UEM_BUNDLE", str(base))
    code, out, _ = run(capsys, "query", data(base) / "sketch/blue/0.png", "--domain", "photo")
    assert code == 0 and "nearest concept exists only in sketch" in out


@pytest.mark.parametrize("args, needle", [
    (["--domain", "clipart"], "unknown domain 'clipart'; the bundle has: photo, sketch"),
    (["--domain", "sketch", "--from", "painting"], "unknown domain 'painting'"),
])
def test_unknown_domains(base, capsys, args, needle):
    code, out, err = run(capsys, "query", data(base) / "photo/red/0.png", *args, "--bundle", base)
    assert_one_line_error(code, err, needle)
    assert out == ""


def test_bad_images_one_line_each(base, tmp_path, capsys):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    good = data(base) / "photo/red/0.png"
    code, out, err = run(capsys, "query", tmp_path / "zero.png", "--domain", "sketch", "--bundle", base)
    assert_one_line_error(code, err, "empty file")
    code, out, err = run(capsys, "query", good, tmp_path / "text.jpg", tmp_path / "missing.png",
                         "--domain", "sketch", "--json", "--bundle", base)
    assert code == 2
    doc = json.loads(out)
    assert doc["errors"] == 2 and doc["results"][0]["accepted"] is True
    assert "not an image" in doc["results"][1]["error"] and "no such file" in doc["results"][2]["error"]
    assert len(err.strip().splitlines()) == 2 and "Traceback" not in err


def test_bundle_mistakes(base, tmp_path, capsys, fresh):
    img = data(base) / "photo/red/0.png"
    code, _, err = run(capsys, "query", img, "--domain", "sketch", "--bundle", tmp_path / "nope.uem")
    assert_one_line_error(code, err, "no such bundle")
    m = json.loads((fresh / "manifest.json").read_text())
    victim = fresh / m["files"]["domains/sketch/vectors.npy"]["path"]
    victim.write_bytes(victim.read_bytes()[:-4] + b"\0\0\0\0")
    code, _, err = run(capsys, "query", img, "--domain", "sketch", "--bundle", fresh)
    assert_one_line_error(code, err, "checksum mismatch for domains/sketch/vectors.npy")
    code, _, err = run(capsys, "info", fresh)
    assert_one_line_error(code, err, "checksum mismatch")


def test_empty_directory_and_bad_k(base, tmp_path, capsys):
    code, _, err = run(capsys, "query", tmp_path, "--domain", "sketch", "--bundle", base)
    assert_one_line_error(code, err, "no images found")
    code, _, err = run(capsys, "query", tmp_path, "--domain", "sketch", "-k", "0", "--bundle", base)
    assert code == 2 and "Traceback" not in err


def test_index_add(base, fresh, tmp_path, capsys):
    d = data(base)
    new = tmp_path / "new"
    shutil.copytree(d / "photo/green", new / "green")
    code, out, err = run(capsys, "index", "add", fresh, new, "--domain", "sketch")
    assert code == 0, err
    assert "added 6 images to sketch (12 -> 18)" in out
    code, out, _ = run(capsys, "index", "add", fresh, new, "--domain", "sketch")
    assert "added 0 images" in out and "6 already present" in out
    assert Engine.open(fresh).count("sketch") == 18
    # a green photo now finds green items in sketch
    code, out, _ = run(capsys, "query", d / "photo/green/0.png", "--domain", "sketch", "--json",
                       "--no-reject", "-k", "1", "--bundle", fresh)
    assert "/new/green/" in json.loads(out)["results"][0]["hits"][0]["path"]


def test_index_add_bad_image_adds_nothing_unless_skipped(base, fresh, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(data(base) / "sketch/blue", src)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, _, err = run(capsys, "index", "add", fresh, src, "--domain", "sketch")
    assert_one_line_error(code, err, "nothing was added")
    assert Engine.open(fresh).count("sketch") == 12
    code, out, err = run(capsys, "index", "add", fresh, src, "--domain", "sketch", "--skip-bad")
    assert code == 0 and "added 6 images" in out and "1 skipped" in out and "warning" in err
    code, _, err = run(capsys, "index", "add", fresh, src, "--domain", "clipart")
    assert_one_line_error(code, err, "unknown domain 'clipart'")


def test_info(base, capsys):
    code, out, _ = run(capsys, "info", base)
    assert code == 0
    assert "photo (12 items), sketch (12 items)" in out and "space ip" in out
    assert "parity       mean_cos 1" in out and "calibration  none" in out
    assert "open-set     prototype rule" in out   # the factory's bundle has no contrast thresholds
    code, out, _ = run(capsys, "info", base, "--json")
    assert json.loads(out)["domains"] == {"photo": 12, "sketch": 12}


def test_real_process_exit_code_and_single_line(base, tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "uem.cli.app", "query", str(tmp_path / "zero.png"),
                           "--domain", "sketch", "--bundle", str(base)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"uemctl: error: {tmp_path / 'zero.png'}: empty file (0 bytes)"


def test_non_utf8_and_long_file_names(base, fresh, tmp_path, capsys):
    src = data(base) / "photo/red/0.png"
    odd = tmp_path / os.fsdecode(b"caf\xe9-\xff.png")
    long_dir = tmp_path / ("d" * 200) / ("e" * 200)
    long_dir.mkdir(parents=True)
    long = long_dir / ("f" * 200 + ".png")
    for p in (odd, long):
        shutil.copy(src, p)
    code, out, err = run(capsys, "query", odd, long, "--domain", "sketch", "--json", "--bundle", base)
    assert code == 0, err
    doc = json.loads(out)
    assert [r["accepted"] for r in doc["results"]] == [True, True]
    assert "\ufffd" in doc["results"][0]["query"]
    code, out, err = run(capsys, "index", "add", fresh, odd, long, "--domain", "photo")
    assert code == 0 and "added 2 images" in out, err
    ids = {it["id"] for it in Engine.open(fresh).snapshot().info.domains["photo"].items}
    assert str(odd.resolve()) in ids  # the real (undecodable) name round-trips through items.jsonl
