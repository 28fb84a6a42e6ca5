"""uem.engine.atomic's write helpers: a write that fails leaves the old file (or no folder) and no
temporaries; one that succeeds replaces what was there."""

from __future__ import annotations

from pathlib import Path

import pytest

from uem.engine.atomic import new_folder, replace_atomic, replace_files, replacing


def test_replacing_swaps_in_what_the_block_wrote(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with replacing(target, suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("a.bin.tmp-") and tmp.suffix == ".png"
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"   # nothing visible before the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_replacing_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_replace_atomic_writes_bytes(tmp_path):
    replace_atomic(tmp_path / "x.json", b"{}")
    replace_atomic(tmp_path / "x.json", b"[1]")
    assert (tmp_path / "x.json").read_bytes() == b"[1]"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_replace_files_moves_each_written_file_in(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "keep.txt").write_text("untouched")

    def write(folder: Path) -> None:
        (folder / "a.txt").write_text("new a")
        (folder / "b.txt").write_text("new b")

    replace_files(tmp_path, write)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.txt": "new a", "b.txt": "new b", "keep.txt": "untouched"}


def test_replace_files_changes_nothing_when_the_writer_fails(tmp_path):
    (tmp_path / "a.txt").write_text("old a")

    def write(folder: Path) -> None:
        (folder / "a.txt").write_text("new a")
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_files(tmp_path, write)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "old a"}


def test_new_folder_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "copy"
    (tmp_path / "copy.tmp").mkdir()                      # left by a killed builder: cleared first
    (tmp_path / "copy.tmp" / "stale").write_text("x")
    with new_folder(out) as tmp:
        assert not out.exists() and not any(tmp.iterdir())
        (tmp / "f").write_text("1")
    assert [p.name for p in out.iterdir()] == ["f"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]

    with pytest.raises(RuntimeError):
        with new_folder(tmp_path / "other") as tmp:
            (tmp / "f").write_text("1")
            raise RuntimeError("builder died")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
