"""The manifest schema (versions migrated in memory, exact round trip) and the generation store's
one transaction (abort removes what it began, commit stamps and collects garbage)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uem.testing.bundles import make_aligned_bundle, make_bundle
from uem.engine.bundle import read_bundle
from uem.engine.bundle.manifest import FORMAT_VERSION, MANIFEST, Manifest, checksum, migrate
from uem.engine.bundle.store import transaction
from uem.engine.errors import BundleError, BundleVersionError


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("schema"))


@pytest.fixture(scope="module")
def aligned(tmp_path_factory) -> Path:
    return make_aligned_bundle(tmp_path_factory.mktemp("schema-aligned"), n_per=4)


def _manifest(b: Path) -> dict:
    return json.loads((b / MANIFEST).read_text())


def test_version_1_is_migrated_to_3_in_memory_and_written_back_as_1(base):
    m = _manifest(base)
    assert m["format_version"] == 1
    up = migrate(m)
    assert up["format_version"] == FORMAT_VERSION == 3 and m["format_version"] == 1  # input untouched
    assert {k: v for k, v in up.items() if k != "format_version"} == {k: v for k, v in m.items()
                                                                      if k != "format_version"}
    again = Manifest.upgrade(m).to_dict()
    assert again == {k: v for k, v in m.items() if k != "checksum"}  # no alignment: still version 1
    assert list(again) == [k for k in m if k != "checksum"]           # same keys, same order
    assert checksum(again) == m["checksum"]


def test_version_2_round_trips_exactly(aligned):
    m = _manifest(aligned)
    assert m["format_version"] == 2 and m["alignment"]
    d = Manifest.upgrade(m).to_dict()
    assert d == {k: v for k, v in m.items() if k != "checksum"} and checksum(d) == m["checksum"]


def test_unknown_or_inconsistent_versions_are_refused():
    with pytest.raises(BundleVersionError, match="version 4 is not supported"):
        migrate({"format_version": 4})
    with pytest.raises(ValueError, match="alignment in a version-1 bundle"):
        migrate({"format_version": 1, "alignment": {"method": "whiten"}})
    # a version-2 bundle that frames content or has probes: an older reader would letter-box its queries
    with pytest.raises(ValueError, match="version-2 bundle"):
        migrate({"format_version": 2, "model": {"preprocess": {"framing": "content"}}})
    with pytest.raises(ValueError, match="version-2 bundle"):
        migrate({"format_version": 2, "alignment": {"probes": {"a": 3}}})
    assert migrate({"format_version": 2, "model": {"preprocess": {"size": 32}}})["format_version"] == 3
    with pytest.raises(ValueError, match="migrate it first"):
        Manifest.from_dict({"format_version": 1})


def test_transaction_abort_removes_the_generation_it_began(fresh):
    before = read_bundle(fresh)
    undone = []
    with pytest.raises(RuntimeError, match="boom"):
        with transaction(fresh, 1.0) as txn:
            gdir = txn.begin(before.manifest)
            (gdir / "half-written").write_bytes(b"x")
            txn.on_abort(lambda: undone.append(gdir.name))
            raise RuntimeError("boom")
    assert not gdir.exists() and undone == [gdir.name]
    with transaction(fresh, 1.0) as txn:  # begun, never committed: removed as well
        gdir = txn.begin(before.manifest)
    assert not gdir.exists()
    assert read_bundle(fresh).manifest == before.manifest


def test_transaction_commit_stamps_swaps_and_collects_garbage(fresh):
    before = read_bundle(fresh)
    (fresh / "g000099").mkdir()                    # a crashed writer's generation
    (fresh / "manifest.json.tmp-1-2").write_text("half")
    with transaction(fresh, 1.0) as txn:
        txn.begin(before.manifest)
        m = Manifest.upgrade(before.manifest)
        m.calibration = {"note": "recalibrated"}
        written = txn.commit(m)
    after = read_bundle(fresh)
    assert after.generation == written["generation"] == 100 and after.manifest == written
    assert after.calibration == {"note": "recalibrated"} and after.manifest["written_at"]
    assert sorted(p.name for p in fresh.iterdir()) == [".lock", "g000001", "manifest.json"]


def test_transaction_needs_a_bundle_unless_creating(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        with transaction(tmp_path / "nope.uem", 1.0):
            pass
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(BundleError, match="not empty and not a bundle"):
        with transaction(tmp_path, 1.0, create=True):
            pass
