"""The demo's open-set copy: the target keeps a seeded half of its subgroups, the others stay whole."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from uem.demo import make_open_set_copy, pick_examples


def _data(root: Path) -> Path:
    for domain in ("photo", "sketch"):
        for sg in ("a", "b", "c", "d"):
            folder = root / domain / sg
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i * 100, 0, 0)).save(folder / f"{sg}{i}.png")
    return root


def test_open_set_copy_drops_half_of_the_target_only(tmp_path):
    data = _data(tmp_path / "data")
    split = make_open_set_copy(data, tmp_path / "copy", target="sketch", seed=0)
    assert len(split["kept"]) == 2 and len(split["dropped"]) == 2
    assert set(split["kept"]) | set(split["dropped"]) == {"a", "b", "c", "d"}
    copy = tmp_path / "copy"
    assert sorted(p.name for p in (copy / "sketch").iterdir()) == split["kept"]
    assert len(list((copy / "photo").rglob("*.png"))) == 8  # the query domain keeps everything
    linked = next((copy / "sketch").rglob("*.png"))
    assert linked.is_symlink() and linked.resolve().is_relative_to(data.resolve())
    # same seed, same split; the existing copy is reused
    assert make_open_set_copy(data, tmp_path / "copy", target="sketch", seed=0) == split
    other = next(seed for seed in range(1, 50)
                 if make_open_set_copy(data, tmp_path / f"probe{seed}", "sketch", seed)["kept"] != split["kept"])
    rebuilt = make_open_set_copy(data, tmp_path / "copy", target="sketch", seed=other)
    assert sorted(p.name for p in (copy / "sketch").iterdir()) == rebuilt["kept"] != split["kept"]


def test_pick_examples_is_seeded_and_stays_in_the_given_subgroups(tmp_path):
    data = _data(tmp_path / "data")
    a = pick_examples(data, "photo", ["a", "c"], n=2, seed=3)
    assert a == pick_examples(data, "photo", ["a", "c"], n=2, seed=3)
    assert sorted(p.parent.name for p in a) == ["a", "c"]


def test_wild_examples_are_one_per_variant_and_named_for_the_sheet(tmp_path):
    from uem.demo import _variant, wild_examples

    data = _data(tmp_path / "data")
    pics = [data / "photo" / "a" / "a0.png", data / "photo" / "b" / "b1.png"]
    wild = wild_examples(pics, data, tmp_path / "wild", seed=0)
    assert [orig for _, orig in wild] == pics
    assert [w.parent.parent.parent.name for w, _ in wild] == ["reframed", "background"]
    assert all(w.is_file() and w.suffix == ".jpg" for w, _ in wild)
    assert [_variant(w) for w, _ in wild] == ["wild: moved and scaled", "wild: on a background"]
