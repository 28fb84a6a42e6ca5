"""The photo3 builder's parts, offline: .rcc reader, registry readers, category tables, layout writer.

Nothing here downloads: the .rcc, .deb and npm files are built by the tests themselves, and the
layout writer gets tiny fake pictures.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from uem.datasets import clipart, photo_sources as ps, photos, registry
from uem.datasets.emoji_art import Emoji
from uem.datasets.qtrcc import RccError, read_rcc, read_rcc_file
from uem.engine.errors import DataError, MissingDependencyError

# --- a hand-built .rcc ------------------------------------------------------------------------


def _name(text: str) -> bytes:
    return struct.pack(">HI", len(text), 0) + text.encode("utf-16-be")


def _rcc(version: int) -> bytes:
    """root/ -> a/ {x.txt (stored), y.bin (zlib)}, and top.txt; children breadth-first, as rcc writes."""
    names = b""
    offsets = {}
    for n in ("a", "top.txt", "x.txt", "y.bin"):
        offsets[n] = len(names)
        names += _name(n)
    x, y, top = b"hello", bytes(range(256)) * 8, "grüß".encode()
    data = b""
    where = {}
    for key, payload in (("x", x), ("y", struct.pack(">I", len(y)) + zlib.compress(y)), ("top", top)):
        where[key] = len(data)
        data += struct.pack(">I", len(payload)) + payload
    tail = b"\0" * 8 if version >= 2 else b""
    tree = b"".join([
        struct.pack(">IHII", 0, 2, 2, 1) + tail,                       # 0 root: 2 children from 1
        struct.pack(">IHII", offsets["a"], 2, 2, 3) + tail,            # 1 a/: 2 children from 3
        struct.pack(">IHHHI", offsets["top.txt"], 0, 0, 0, where["top"]) + tail,   # 2 top.txt
        struct.pack(">IHHHI", offsets["x.txt"], 0, 0, 0, where["x"]) + tail,       # 3 a/x.txt
        struct.pack(">IHHHI", offsets["y.bin"], 1, 0, 0, where["y"]) + tail,       # 4 a/y.bin (zlib)
    ])
    header = 24 if version >= 3 else 20
    data_off, names_off = header, header + len(data)
    tree_off = names_off + len(names)
    head = b"qres" + struct.pack(">IIII", version, tree_off, data_off, names_off)
    if version >= 3:
        head += struct.pack(">I", 1)
    return head + data + names + tree


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_reads_stored_and_compressed_entries(version):
    files = read_rcc(_rcc(version))
    assert files == {"a/x.txt": b"hello", "a/y.bin": bytes(range(256)) * 8, "top.txt": "grüß".encode()}


def test_rcc_prefix_and_file(tmp_path):
    p = tmp_path / "t.rcc"
    p.write_bytes(_rcc(3))
    assert set(read_rcc_file(p, prefix="a/")) == {"a/x.txt", "a/y.bin"}
    with pytest.raises(RccError, match="cannot read"):
        read_rcc_file(tmp_path / "missing.rcc")


def test_rcc_refuses_bad_input():
    good = _rcc(3)
    with pytest.raises(RccError, match="not a Qt resource"):
        read_rcc(b"PK\x03\x04" + good[4:])
    with pytest.raises(RccError, match="version 9"):
        read_rcc(good[:4] + struct.pack(">I", 9) + good[8:])
    with pytest.raises(RccError, match="truncated"):
        read_rcc(good[:-10])
    bad = bytearray(good)
    i = bad.index(zlib.compress(bytes(range(256)) * 8)[:6])
    bad[i + 2:i + 6] = b"\xff\xff\xff\xff"
    with pytest.raises(RccError, match="zlib|uncompressed"):
        read_rcc(bytes(bad))
    assert issubclass(RccError, DataError)


# --- registry readers -------------------------------------------------------------------------

def _tar(files: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def test_read_deb_and_npm(tmp_path):
    deb = tmp_path / "p_1_all.deb"
    deb.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": _tar({"./control": b"x"}, "w:xz"),
                         "data.tar.xz": _tar({"./usr/share/a.rcc": b"A", "./usr/b": b"B"}, "w:xz")}))
    assert registry.read_deb(deb, lambda n: n.endswith(".rcc")) == {"usr/share/a.rcc": b"A"}
    tgz = tmp_path / "p-1.0.0.tgz"
    tgz.write_bytes(_tar({"package/assets/E001.jpeg": b"J", "package/index.csv": b"c"}, "w:gz"))
    assert registry.read_npm(tgz, lambda n: n.startswith("assets/")) == {"assets/E001.jpeg": b"J"}
    (tmp_path / "bad.deb").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="not an ar archive"):
        registry.read_deb(tmp_path / "bad.deb", lambda n: True)


def test_fetch_uses_the_cache_and_says_when_the_client_is_missing(tmp_path, monkeypatch):
    data = b"package bytes"
    pkg = registry.Pinned("npm", "x", "1.0.0", "x-1.0.0.tgz", hashlib.sha256(data).hexdigest())
    (tmp_path / pkg.filename).write_bytes(data)
    monkeypatch.setattr(registry.subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    assert registry.fetch(pkg, tmp_path) == tmp_path / pkg.filename
    (tmp_path / pkg.filename).write_bytes(b"other bytes")          # wrong sha: fetch again ...
    monkeypatch.setattr(registry.shutil, "which", lambda name: None)  # ... with no npm here
    with pytest.raises(MissingDependencyError, match="'npm', which is not installed"):
        registry.fetch(pkg, tmp_path)
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "c"))
    assert registry.cache_dir() == tmp_path / "c"


# --- categories -------------------------------------------------------------------------------

def test_photo_name_to_category():
    assert ps.gcompris_category("erase/resource", "alpaca") == "mammal"
    assert ps.gcompris_category("erase/resource", "toucan") == "bird"
    assert ps.gcompris_category("explore_farm_animals/resource/animals", "duck") == "bird"
    assert ps.gcompris_category("categorization/resource/images/fishes", "fish28") == "fish"
    assert ps.gcompris_category("categorization/resource/images/tools", "plier3") == "tool"
    assert ps.gcompris_category("categorization/resource/images/tools", "spray") is None
    assert ps.gcompris_category("explore_monuments/resource/france", "eiffelTower") == "building"
    assert ps.gcompris_category("explore_monuments/resource/usa", "mountRushmore") is None  # a mountain
    assert ps.gcompris_category("nowhere", "cat") is None
    assert ps.ifct_category("E001", "Apple, big") == "fruit"
    assert ps.ifct_category("C033", "Spinach") == ps.ifct_category("F002", "Carrot") == "vegetable"
    assert ps.ifct_category("P001", "Allathi") == ps.ifct_category("S001", "Cat fish") == "fish"
    assert ps.ifct_category("S007", "Crab") == ps.ifct_category("S009", "Prawns, small") == "shellfish"
    assert ps.ifct_category("Q006", "Oyster") == "shellfish"
    assert ps.ifct_category("N001", "Chicken") is None and ps.ifct_category("A001", "") is None
    assert all(r.endswith(".rcc") and r.startswith(ps.RCC_DIR) for r in ps.rcc_files())


def test_readme_licences():
    text = ("Copyright: Timothee Giet, 2018\nLicense: CC-BY-SA 4.0\nFiles:\nkey.svg\nfrance/france.svg\n\n"
            "Copyright: Someone\nSource: https://example.org/a.jpg\nLicense: Public domain\n"
            "Files: a.webp b.webp\n\n"
            "Files: c.webp\nLicense: CC0-1.0\nCopyright: X\n")
    credits = ps.parse_readme(text)
    assert credits["france/france.svg"].license == "CC-BY-SA-4.0"
    assert credits["b.webp"] == ps.Credit("Public Domain", "Someone", "https://example.org/a.jpg")
    assert credits["c.webp"].license == "CC0-1.0"
    readmes = {"m/resource": credits, "m/resource/sub": {}}
    assert ps.credit_for(readmes, "m/resource/france", "france.svg").license == "CC-BY-SA-4.0"
    assert ps.credit_for(readmes, "m/resource", "zzz.webp") is None
    assert ps.normalize_license("CC-BY-2.0") == "CC-BY-2.0" and ps.normalize_license("GPLv2+") == "GPLv2+"


def _emoji(name: str, subgroup: str, cps=(0x1F600,)) -> Emoji:
    return Emoji(tuple(cps), "Group", subgroup, name)


def test_subgroup_to_category():
    cat = clipart.category_of
    assert cat(_emoji("dog", "animal-mammal")) == "mammal"
    assert cat(_emoji("paw prints", "animal-mammal")) is None
    assert cat(_emoji("whale", "animal-marine")) == "mammal"
    assert cat(_emoji("tropical fish", "animal-marine")) == "fish"
    assert cat(_emoji("lobster", "animal-marine")) == "shellfish"
    assert cat(_emoji("coral", "animal-marine")) is None
    assert cat(_emoji("feather", "animal-bird")) is None and cat(_emoji("owl", "animal-bird")) == "bird"
    assert cat(_emoji("grapes", "food-fruit")) == "fruit" and cat(_emoji("carrot", "food-vegetable")) == "vegetable"
    assert cat(_emoji("mosque", "place-religious")) == cat(_emoji("castle", "place-building")) == "building"
    assert cat(_emoji("brick", "place-building")) is None
    assert cat(_emoji("wrench", "tool")) == "tool" and cat(_emoji("dagger", "tool")) is None
    assert cat(_emoji("scissors", "office")) == "tool"
    assert cat(_emoji("tomato", "food-fruit")) == "vegetable" and cat(_emoji("avocado", "food-vegetable")) == "fruit"
    assert cat(_emoji("grinning face", "face-smiling")) is None
    e = _emoji("T-Rex", "animal-reptile", (0x1F996,))
    assert clipart.flat_names(e)[0] == "icons/flat/t-rex.svg"
    dove = _emoji("dove", "animal-bird", (0x1F54A, 0xFE0F))
    assert clipart.d3_names(dove) == ["assets/1f54a-fe0f.webp", "assets/1f54a.webp"]


# --- the layout writer on tiny fake inputs ----------------------------------------------------

def _png(size, colour, mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _photo(i: int, size=(600, 300)) -> bytes:
    """A smooth random picture: seeded coarse noise, enlarged (so each i looks different)."""
    coarse = np.random.default_rng(i).integers(0, 256, (6, 12, 3), dtype=np.uint8)
    im = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32" width="32" height="32">'
       '<circle cx="16" cy="16" r="{r}" fill="#c40"/></svg>')


def _fake_items() -> list[photos.Item]:
    items = []
    for cat, k in (("fruit", 0), ("tool", 10)):
        for i in range(photos.MIN_PER_DOMAIN):
            items.append(photos.Item("photo", cat, f"p-{cat}-{i}", "fake", f"{cat}{i}.jpeg",
                                     _photo(k + i), name=f"{cat} {i}", license="CC0-1.0"))
            items.append(photos.Item("clipart", cat, f"{k + i:x}", "fake", f"{cat}{i}.svg",
                                     SVG.format(r=4 + i + k // 2).encode(), license="MIT"))
            items.append(photos.Item("render3d", cat, f"{k + i:x}", "fake", f"{cat}{i}.webp",
                                     _png((40, 40), ((k + i) * 20, 0, 0, 255), "RGBA"), license="MIT"))
    # an exact duplicate, a category with too few clip-art, a photo with transparency
    items.append(photos.Item("photo", "fruit", "p-dup", "fake", "dup.jpeg", items[0].data, license="CC0-1.0"))
    items.append(photos.Item("photo", "bug", "p-bee", "fake", "bee.jpeg", _photo(30), license="CC0-1.0"))
    items.append(photos.Item("photo", "fruit", "p-alpha", "fake", "a.png", _png((100, 50), (0, 0, 0, 0), "RGBA"),
                             license="CC0-1.0"))
    return items


def test_layout_writer(tmp_path):
    out = tmp_path / "photo3"
    r = photos.build_from_items(out, _fake_items(), [], show_progress=False)
    n = photos.MIN_PER_DOMAIN
    assert r.categories == {"fruit": {"photo": n + 1, "clipart": n, "render3d": n},
                            "tool": {"photo": n, "clipart": n, "render3d": n}}
    m = json.loads((out / "photo3.json").read_text())
    assert m["format"] == "photo3" and m["complete"] is True
    assert m["counts"] == {"photo": 2 * n + 1, "clipart": 2 * n, "render3d": 2 * n}
    assert m["left_out_categories"][0]["category"] == "bug"
    assert [x["identity"] for x in m["left_out"]] == ["p-dup"]
    assert m["licenses"]["photo"] == {"CC0-1.0": 2 * n + 1}
    assert len(m["items"]) == sum(m["counts"].values())
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(files) == sum(m["counts"].values())
    assert "photo/fruit/p-fruit-0.png" in files and "clipart/tool/a.png" in files
    with Image.open(out / "photo/fruit/p-fruit-0.png") as im:
        assert im.mode == "RGB" and im.size == (256, 128)           # longer side 600 -> 256
    with Image.open(out / "photo/fruit/p-alpha.png") as im:
        assert im.size == (100, 50) and im.getpixel((5, 5)) == (255, 255, 255)  # transparent -> white
    with Image.open(out / "clipart/fruit/0.png") as im:
        assert im.mode == "RGB" and im.size == (128, 128) and im.getpixel((0, 0)) == (255, 255, 255)
    with Image.open(out / "render3d/tool/a.png") as im:
        assert im.size == (128, 128)
    # same selection again: found as built; another selection: refused without --force
    again = photos.build_from_items(out, _fake_items(), [], show_progress=False)
    assert again.already_built
    with pytest.raises(DataError, match="different selection"):
        photos.build_from_items(out, _fake_items(), [], categories=["tool"], show_progress=False)
    r = photos.build_from_items(out, _fake_items(), [], categories=["tool"], limit=2, force=True,
                                show_progress=False)
    assert r.categories == {"tool": {"photo": 2, "clipart": 2, "render3d": 2}}
    with pytest.raises(DataError, match="unknown category"):
        photos.build_from_items(out, _fake_items(), [], categories=["bug"], force=True, show_progress=False)


def test_near_duplicate_photos_and_identities(tmp_path):
    items = _fake_items()
    big = Image.open(io.BytesIO(items[0].data)).convert("RGB")
    buf = io.BytesIO()
    big.resize((300, 150)).save(buf, format="JPEG", quality=70)   # the same photo, re-encoded smaller
    items.append(photos.Item("photo", "fruit", "p-again", "fake", "again.jpeg", buf.getvalue(), license="CC0-1.0"))
    kept, left = photos.dedupe(items)
    assert {x["identity"] for x in left} == {"p-dup", "p-again"}
    assert "same photo as p-fruit-0" in next(x["reason"] for x in left if x["identity"] == "p-again")
    items.append(photos.Item("clipart", "fruit", "0", "fake", "x.svg", SVG.format(r=15).encode()))
    with pytest.raises(DataError, match="duplicate identities: clipart/0"):
        photos.build_from_items(tmp_path / "x", items, [], show_progress=False)
