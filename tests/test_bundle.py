"""Bundle format: round trip, verification before hnswlib/onnxruntime, atomic writes, locking."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from uem.engine import Engine, atomic
from uem.engine.bundle import store as bundle  # the commit (replace_atomic) is patched where it runs
from uem.engine.bundle import (FORMAT_VERSION, MANIFEST, DomainData, HnswParams, _checksum,
                               append_to_domain, read_bundle, write_bundle)
from uem.engine.errors import BundleError, BundleVersionError, UnknownDomainError
from uem.engine.index import DomainIndex
from uem.engine.prototypes import PrototypeGraph
from uem.testing.bundles import DIM, SPEC, make_bundle, make_encoder


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("base"), keep_fp32=True,
                       calibration={"radius_scale": {"sketch": 1.5}})


def _manifest(b: Path) -> dict:
    return json.loads((b / MANIFEST).read_text())


def _rewrite(b: Path, m: dict) -> None:
    """Edit the manifest 'consistently' (fresh checksum), as a careless tool or an attacker would."""
    m.pop("checksum", None)
    m["checksum"] = _checksum(m)
    (b / MANIFEST).write_text(json.dumps(m))


@pytest.fixture
def no_loaders(monkeypatch):
    """Fail loudly if hnswlib or onnxruntime is handed any file."""
    def boom(*a, **k):
        raise AssertionError("a file reached hnswlib/onnxruntime before verification failed")
    monkeypatch.setattr(DomainIndex, "load", classmethod(lambda cls, *a, **k: boom()))
    monkeypatch.setattr("uem.engine.engine.Encoder", boom)


def test_round_trip(base):
    info = read_bundle(base)
    m = info.manifest
    assert m["format_version"] == 1 and info.generation == 1  # no alignment: still readable by older uem
    assert info.embed_dim == DIM and info.preprocess == SPEC
    assert info.hnsw == HnswParams(M=8, ef_construction=40, ef_search=16)
    assert m["hnsw"]["dim"] == DIM and m["model"]["opset"] == 17
    assert set(info.domains) == {"photo", "sketch"}
    assert info.calibration == {"radius_scale": {"sketch": 1.5}}
    assert info.extra["parity"]["mean_cos"] == 1.0
    assert info.encoder_fp32 is not None
    for name, d in info.domains.items():
        v = info.load_vectors(name)
        assert v.shape == (d.count, DIM) and v.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        assert len(d.items) == d.count and all(it["id"].startswith(name) for it in d.items)
        labels, sims = info.load_index(name).search(v[:3], 1)
        assert labels[:, 0].tolist() == [0, 1, 2]
    g = info.load_prototypes()
    assert g.domains == ["photo", "sketch"] and len(g.links) == 1
    assert set(m["files"]) == {"encoder.onnx", "encoder.fp32.onnx", "prototypes.npy", "prototypes.json",
                               *(f"domains/{d}/{f}" for d in ("photo", "sketch")
                                 for f in ("index.bin", "vectors.npy", "items.jsonl"))}


def test_every_file_tamper_is_detected_before_loading(fresh, no_loaders):
    m = _manifest(fresh)
    targets = [fresh / e["path"] for e in m["files"].values()] + [fresh / MANIFEST]
    for path in targets:
        original = path.read_bytes()
        for pos in {0, len(original) // 2, len(original) - 1}:
            flipped = bytearray(original)
            flipped[pos] ^= 0xFF
            path.write_bytes(bytes(flipped))
            with pytest.raises(BundleError):
                Engine.open(fresh)
        path.write_bytes(original[:-1])  # truncated
        with pytest.raises(BundleError):
            Engine.open(fresh)
        path.write_bytes(original)
    read_bundle(fresh)  # intact again


@pytest.mark.parametrize("victim", ["encoder.onnx", "domains/photo/index.bin", "prototypes.json",
                                    "domains/sketch/items.jsonl"])
def test_missing_file(fresh, no_loaders, victim):
    (fresh / _manifest(fresh)["files"][victim]["path"]).unlink()
    with pytest.raises(BundleError, match="missing file"):
        Engine.open(fresh)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        read_bundle(tmp_path / "nope.uem")
    with pytest.raises(BundleError, match="no manifest"):
        read_bundle(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(BundleError, match="directory"):
        read_bundle(tmp_path / "f")


def test_wrong_version(fresh):
    m = _manifest(fresh)
    m["format_version"] = FORMAT_VERSION + 1
    _rewrite(fresh, m)
    with pytest.raises(BundleVersionError, match=f"version {FORMAT_VERSION + 1}"):
        Engine.open(fresh)


def test_edited_manifest_without_checksum(fresh):
    m = _manifest(fresh)
    m["hnsw"]["ef_search"] = 99
    (fresh / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="checksum"):
        read_bundle(fresh)


@pytest.mark.parametrize("bad", ["../outside.bin", "/etc/hostname", "g000001/../../x",
                                 "C:/x", "g000001\\x", ""])
def test_manifest_path_escaping_the_bundle(fresh, no_loaders, bad):
    m = _manifest(fresh)
    m["files"]["domains/photo/index.bin"]["path"] = bad
    _rewrite(fresh, m)
    with pytest.raises(BundleError, match="escapes the bundle|invalid"):
        Engine.open(fresh)


def test_symlink_escaping_the_bundle(fresh, tmp_path, no_loaders):
    m = _manifest(fresh)
    real = fresh / m["files"]["prototypes.json"]["path"]
    outside = tmp_path / "outside.json"
    shutil.copy(real, outside)
    real.unlink()
    real.symlink_to(outside)
    with pytest.raises(BundleError, match="escapes the bundle"):
        read_bundle(fresh)


def test_index_dim_mismatch_caught_before_hnswlib(fresh, no_loaders):
    """An index of another dim, with a manifest that honestly hashes it: the header check fires."""
    m = _manifest(fresh)
    ent = m["files"]["domains/photo/index.bin"]
    path = fresh / ent["path"]
    v = np.random.default_rng(0).normal(size=(12, DIM + 4)).astype(np.float32)
    path.unlink()
    DomainIndex.build(v, space="ip", M=8, ef_construction=40, ef_search=16).save(path)
    ent["size"], ent["sha256"] = path.stat().st_size, bundle.sha256_file(path)
    _rewrite(fresh, m)
    with pytest.raises(BundleError, match="does not match dim"):
        Engine.open(fresh)


def test_vectors_shape_and_items_count_checked(fresh, no_loaders):
    m = _manifest(fresh)
    m["domains"][0]["count"] = 11
    _rewrite(fresh, m)
    with pytest.raises(BundleError, match=r"\(11, 8\)|11"):
        read_bundle(fresh)


def test_write_refuses_foreign_directory(tmp_path, base):
    (tmp_path / "mine.txt").write_text("precious")
    info = read_bundle(base)
    with pytest.raises(BundleError, match="not empty and not a bundle"):
        _rewrite_bundle(tmp_path, info)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def _rewrite_bundle(dst: Path, info, **kw) -> None:
    domains = [DomainData(n, info.load_vectors(n, mmap=False), d.items) for n, d in info.domains.items()]
    write_bundle(dst, encoder_onnx=info.encoder.path, encoder_fp32_onnx=None,
                 preprocess=info.preprocess, embed_dim=info.embed_dim, domains=domains,
                 prototypes=info.load_prototypes(), hnsw=info.hnsw, calibration={}, extra={}, **kw)


def test_crash_before_commit_keeps_old_bundle_and_next_write_cleans(fresh, monkeypatch):
    before = read_bundle(fresh)
    real = bundle.replace_atomic

    def crash(path, data):
        raise KeyboardInterrupt("simulated crash at the commit point")
    monkeypatch.setattr(bundle, "replace_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        _rewrite_bundle(fresh, before)
    # a crash that also skipped the in-process cleanup leaves garbage behind:
    (fresh / "g000007").mkdir()
    (fresh / "manifest.json.tmp-1-2").write_text("half")
    after = read_bundle(fresh)
    assert after.generation == before.generation and after.manifest == before.manifest
    monkeypatch.setattr(bundle, "replace_atomic", real)
    _rewrite_bundle(fresh, before)
    names = sorted(p.name for p in fresh.iterdir())
    assert names == [".lock", "g000001", "g000008", "manifest.json"]
    assert read_bundle(fresh).generation == 8


def test_append_then_old_generations_collected(fresh):
    info = read_bundle(fresh)
    rng = np.random.default_rng(1)
    for i in range(3):
        v = rng.normal(size=(2, DIM)).astype(np.float32)
        added, info = append_to_domain(fresh, "sketch", v, [{"path": f"/n/{i}a"}, {"path": f"/n/{i}b"}])
        assert added == 2
    assert info.domains["sketch"].count == 12 + 6 and info.domains["photo"].count == 12
    # unchanged files still come from generation 1; only current + previous generations remain
    assert info.manifest["files"]["domains/photo/index.bin"]["path"].startswith("g000001/")
    assert sorted(p.name for p in fresh.glob("g*")) == ["g000001", "g000003", "g000004"]
    # re-adding the same ids is a no-op
    added, info2 = append_to_domain(fresh, "sketch", v, [{"path": "/n/2a"}, {"path": "/n/2b"}])
    assert added == 0 and info2.generation == info.generation
    with pytest.raises(UnknownDomainError):
        append_to_domain(fresh, "clipart", v, [{"path": "x"}, {"path": "y"}])


def test_lock_timeout_fails_cleanly(fresh):
    v = np.ones((1, DIM), np.float32)
    with atomic.exclusive_lock(fresh / bundle.LOCK_FILE, 1.0):
        with pytest.raises(BundleError, match="another process"):
            append_to_domain(fresh, "photo", v, [{"path": "p"}], lock_timeout=0.2)
    assert append_to_domain(fresh, "photo", v, [{"path": "p"}])[0] == 1


def test_writer_rejects_inconsistent_inputs(tmp_path):
    enc = make_encoder(tmp_path / "e.onnx")
    g = PrototypeGraph(domains=["a"], centroids=np.eye(DIM, dtype=np.float32)[:1], owner=[0],
                       links=np.zeros((0, 2)), radius=[], domain_means=np.eye(DIM)[:1])
    ok = dict(encoder_onnx=enc, encoder_fp32_onnx=None, preprocess=SPEC, embed_dim=DIM,
              prototypes=g, hnsw=HnswParams(M=8), calibration={}, extra={})
    v = np.eye(DIM, dtype=np.float32)[:2]
    bad_domains = [
        [DomainData("../a", v, [{"path": "x"}, {"path": "y"}])],
        [DomainData("a", v, [{"path": "x"}])],
        [DomainData("a", v[:, :3], [{"path": "x"}, {"path": "y"}])],
        [DomainData("a", v, [{"path": "x"}, {"path": "x"}])],
        [DomainData("a", v * np.nan, [{"path": "x"}, {"path": "y"}])],
    ]
    for doms in bad_domains:
        with pytest.raises(ValueError):
            write_bundle(tmp_path / "b.uem", domains=doms, **ok)
    assert not (tmp_path / "b.uem").exists()
    write_bundle(tmp_path / "b.uem", domains=[DomainData("a", v, [{"path": "x"}, {"path": "y"}])], **ok)
    assert read_bundle(tmp_path / "b.uem").domains["a"].items[0] == {"path": "x", "id": "x"}


def test_hostile_manifest_shapes(fresh):
    for text in ["[" * 100000, "null", "[]", '{"format": "uem-bundle", "format_version": true}', "\xff"]:
        (fresh / MANIFEST).write_text(text, encoding="latin-1")
        with pytest.raises(BundleError):
            read_bundle(fresh)


def test_index_with_out_of_range_neighbour_never_reaches_hnswlib(fresh, no_loaders):
    """Even with a manifest that hashes the bad file honestly, the structural check refuses it."""
    m = _manifest(fresh)
    ent = m["files"]["domains/sketch/index.bin"]
    path = fresh / ent["path"]
    raw = bytearray(path.read_bytes())
    header = 96
    raw[header:header + 2] = (1).to_bytes(2, "little")        # element 0: one level-0 link...
    raw[header + 4:header + 8] = (10**6).to_bytes(4, "little")  # ...to an element that does not exist
    path.write_bytes(bytes(raw))
    ent["sha256"] = bundle.sha256_file(path)
    _rewrite(fresh, m)
    with pytest.raises(BundleError, match="neighbour id out of range"):
        Engine.open(fresh)
