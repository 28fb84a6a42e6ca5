"""Serving domains from Milvus (Milvus Lite here): same answers as hnswlib, adds, atomicity, CLI.

One Milvus Lite database per module (pymilvus starts it in-process and reuses it for the path).
Skipped, with the reason, where pymilvus / milvus-lite are not installed (`pip install 'uem[milvus]'`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="needs pymilvus: pip install 'uem[milvus]'")
pytest.importorskip("milvus_lite", reason="needs milvus-lite: pip install 'uem[milvus]'")

from uem.cli.app import main as cli_main  # noqa: E402
from uem.engine import Engine  # noqa: E402
from uem.engine.bundle import read_bundle, reindex_bundle  # noqa: E402
from uem.engine.errors import BackendError, BundleError  # noqa: E402
from uem.engine.milvus import MilvusIndex, MilvusStore, normalise_uri  # noqa: E402
from uem.testing.bundles import draw, make_bundle  # noqa: E402


@pytest.fixture(scope="module")
def lite(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "milvus.db")


@pytest.fixture(scope="module")
def store(lite) -> MilvusStore:
    s = MilvusStore(lite)
    yield s
    s.close()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("mil"), n_per=8)


def _to_milvus(src: Path, dst: Path, uri: str) -> Path:
    shutil.copytree(src, dst)
    ext = MilvusIndex(uri)
    try:
        reindex_bundle(dst, ext)
    finally:
        ext.close()
    return dst


@pytest.fixture(scope="module")
def served(base, lite, tmp_path_factory) -> Path:
    return _to_milvus(base, tmp_path_factory.mktemp("served") / "model.uem", lite)


def _queries(n_per: int = 3) -> list:
    rng = np.random.default_rng(11)
    return [draw(c, d, rng) for d, cs in (("photo", ["red", "green"]), ("sketch", ["red", "blue"]))
            for c in cs for _ in range(n_per)]


def _uem_collections(store: MilvusStore) -> set[str]:
    return {c for c in store._client.list_collections() if c.startswith("uem_")}


def test_import_engine_does_not_import_pymilvus():
    code = "import sys, uem.engine; print('pymilvus' in sys.modules, 'milvus_lite' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split() == ["False", "False"]


def test_same_answers_and_decisions_as_hnswlib(base, served):
    images = _queries()
    with Engine.open(base, threads=1) as h, Engine.open(served, threads=1) as m:
        for target in ("photo", "sketch"):
            rh = h.query_batch(images, target, k=5, no_reject=True)
            rm = m.query_batch(images, target, k=5, no_reject=True)
            for a, b in zip(rh, rm):
                assert (a.accepted, a.reason, a.source) == (b.accepted, b.reason, b.source)
                assert b.score == pytest.approx(a.score, rel=1e-5, abs=1e-6)
                assert [x.id for x in b.hits] == [x.id for x in a.hits]
                assert [x.path for x in b.hits] == [x.path for x in a.hits]
                np.testing.assert_allclose([x.score for x in b.hits], [x.score for x in a.hits], atol=1e-5)
        decided = [r.accepted for r in h.query_batch(images, "sketch", k=3)]
        assert True in decided and False in decided  # the comparison covered both outcomes


def test_manifest_records_backend_and_plain_open_reopens(served, lite, store):
    info = read_bundle(served)
    assert info.backend["kind"] == "milvus" and info.backend["uri"] == normalise_uri(lite)
    assert info.backend["index"] == {"type": "HNSW", "metric": "IP", "M": info.hnsw.M,
                                     "efConstruction": info.hnsw.ef_construction,
                                     "ef": info.hnsw.ef_search}
    assert sorted(info.backend["collections"]) == ["photo", "sketch"]
    assert not any(n.endswith("index.bin") for n in info.manifest["files"])
    assert all(d.index is None and d.vectors.path.is_file() for d in info.domains.values())
    assert set(info.backend["collections"].values()) <= _uem_collections(store)
    with Engine.open(served) as eng:
        assert eng.info()["backend"]["kind"] == "milvus"
        assert eng.query(draw("red", "sketch", np.random.default_rng(1)), "sketch").accepted


def test_backend_must_match_the_bundle(base, served, tmp_path):
    with pytest.raises(BundleError, match="no Milvus collections"):
        Engine.open(base, backend="milvus")
    with pytest.raises(BundleError, match="exported for Milvus"):
        Engine.open(served, backend="hnswlib")
    with pytest.raises(ValueError, match="backend must be one of"):
        Engine.open(served, backend="faiss")
    with pytest.raises(BackendError, match="has no collection"):  # uri= overrides the manifest
        Engine.open(served, uri=str(tmp_path / "empty.db"))


def test_explicit_uri_override_serves_from_another_address(served, lite):
    with Engine.open(served, backend="milvus", uri=lite) as eng:
        assert eng.count("sketch") == 16


def test_add_goes_to_milvus_persists_and_other_snapshots_ignore_it(base, lite, store, tmp_path):
    bundle = _to_milvus(base, tmp_path / "m.uem", lite)
    rng = np.random.default_rng(5)
    new = [draw("yellow", "sketch", rng) for _ in range(3)]
    with Engine.open(bundle, threads=1) as a, Engine.open(bundle, threads=1) as b:
        assert a.add("sketch", new, ids=["y0", "y1", "y2"]) == 3
        assert a.count("sketch") == 19 and b.count("sketch") == 16
        top = a.query(new[1], "sketch", k=1, no_reject=True).hits[0]
        assert top.id == "y1" and top.score == pytest.approx(1.0, abs=1e-4)
        # b still serves its snapshot: Milvus has 19 rows, b only sees the 16 it knows
        hits = b.query(new[1], "sketch", k=50, no_reject=True).hits
        assert len(hits) == 16 and not {"y0", "y1", "y2"} & {h.id for h in hits}
        assert b.reload() and {"y1"} <= {h.id for h in b.query(new[1], "sketch", k=3, no_reject=True).hits}
        assert a.add("sketch", new[:1], ids=["y0"]) == 0  # already there: skipped
    coll = read_bundle(bundle).backend["collections"]["sketch"]
    assert int(store._client.get_collection_stats(coll)["row_count"]) == 19
    with Engine.open(bundle) as c:
        assert c.count("sketch") == 19


def test_failed_add_leaves_invisible_rows_that_the_next_add_overwrites(base, lite, tmp_path, monkeypatch):
    bundle = _to_milvus(base, tmp_path / "m.uem", lite)
    rng = np.random.default_rng(6)
    import uem.engine.bundle.writers as bundle_mod

    with Engine.open(bundle, threads=1) as eng:
        def crash(*a, **k):
            raise OSError("disk full")

        monkeypatch.setattr(bundle_mod, "_write_domain_files", crash)
        with pytest.raises(OSError):
            eng.add("sketch", [draw("yellow", "sketch", rng)], ids=["lost"])
        monkeypatch.undo()
        assert eng.count("sketch") == 16  # not committed
        assert "lost" not in {h.id for h in eng.query(draw("yellow", "sketch", rng), "sketch", k=40,
                                                       no_reject=True).hits}
        assert eng.add("sketch", [draw("yellow", "sketch", rng)], ids=["kept"]) == 1
        ids = {h.id for h in eng.query(draw("yellow", "sketch", rng), "sketch", k=40, no_reject=True).hits}
        assert "kept" in ids and "lost" not in ids and len(ids) == 17


def test_failed_export_to_milvus_drops_its_collections_and_keeps_the_bundle(base, lite, store, tmp_path,
                                                                         monkeypatch):
    bundle = tmp_path / "m.uem"
    shutil.copytree(base, bundle)
    before = _uem_collections(store)
    ext = MilvusIndex(lite)
    calls = []
    real = ext.store.finish_bulk

    def fail_second(name, *a, **k):
        calls.append(name)
        if len(calls) == 2:
            raise BackendError("index build failed")
        return real(name, *a, **k)

    monkeypatch.setattr(ext.store, "finish_bulk", fail_second)
    with pytest.raises(BackendError):
        reindex_bundle(bundle, ext)
    ext.close()
    assert _uem_collections(store) == before
    assert read_bundle(bundle).backend is None
    with Engine.open(bundle) as eng:
        assert eng.count("photo") == 16


def test_move_back_to_hnswlib_drops_the_collections(base, lite, store, tmp_path):
    bundle = _to_milvus(base, tmp_path / "m.uem", lite)
    cols = set(read_bundle(bundle).backend["collections"].values())
    assert cols <= _uem_collections(store)
    assert cli_main(["index", "move", str(bundle), "--to", "hnswlib"]) == 0
    assert not cols & _uem_collections(store)
    info = read_bundle(bundle)
    assert info.backend is None and all(d.index is not None for d in info.domains.values())
    img = draw("red", "photo", np.random.default_rng(2))
    with Engine.open(bundle) as a, Engine.open(base) as b:
        assert [h.id for h in a.query(img, "sketch", k=5).hits] == [h.id for h in b.query(img, "sketch", k=5).hits]


def test_cli_query_index_add_and_one_line_errors(base, lite, tmp_path, capsys):
    bundle = tmp_path / "m.uem"
    shutil.copytree(base, bundle)
    assert cli_main(["index", "move", str(bundle), "--to", lite]) == 0
    assert "served from Milvus" in capsys.readouterr().out
    img = tmp_path / "q.png"
    draw("red", "photo", np.random.default_rng(4)).save(img)
    assert cli_main(["query", str(img), "-d", "sketch", "-b", str(bundle), "--backend", "milvus",
                     "--uri", lite, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)["results"][0]
    assert res["accepted"] and len(res["hits"]) == 10
    folder = tmp_path / "new"
    folder.mkdir()
    draw("yellow", "sketch", np.random.default_rng(8)).save(folder / "y.png")
    assert cli_main(["index", "add", str(bundle), str(folder), "-d", "sketch"]) == 0
    assert "16 -> 17" in capsys.readouterr().out
    for argv, msg in ((["query", str(img), "-d", "sketch", "-b", str(bundle), "--backend", "hnswlib"],
                       "exported for Milvus"),
                      (["query", str(img), "-d", "sketch", "-b", str(bundle), "--uri", "redis://x"],
                       "--uri:"),
                      (["index", "move", str(bundle), "--to", "nowhere"], "--uri:")):
        assert cli_main(argv) == 2
        e = capsys.readouterr().err.strip()
        assert e.startswith("uemctl: error:") and msg in e and "\n" not in e


def test_remote_uri_over_grpc(base, tmp_path):
    """milvus://HOST:PORT goes through pymilvus' network client (a Lite server stands in for a cluster)."""
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    server, db, port = start_server_in_thread(str(tmp_path / "server"), host="127.0.0.1", port=0)
    try:
        uri = f"milvus://127.0.0.1:{port}"
        bundle = _to_milvus(base, tmp_path / "m.uem", uri)
        assert read_bundle(bundle).backend["uri"] == uri
        img = draw("red", "photo", np.random.default_rng(9))
        with Engine.open(bundle) as m, Engine.open(base) as h:
            assert [x.id for x in m.query(img, "sketch", k=5).hits] == [x.id for x in h.query(img, "sketch", k=5).hits]
    finally:
        server.stop(grace=0)
        db.close()


def test_uri_forms():
    assert normalise_uri("milvus://db.example:19530/") == "milvus://db.example:19530"
    assert normalise_uri("x.db") == str(Path("x.db").resolve())
    for bad in ("milvus://", "x.sqlite", "/no/such/dir/m.db"):
        with pytest.raises(ValueError):
            normalise_uri(bad)


def test_write_bundle_to_milvus_and_rewrites_retire_old_collections(base, lite, store, tmp_path):
    """The exporter's writer: domains into collections; a rewrite (re-export) drops what it replaced."""
    from uem.engine.bundle import DomainData, write_bundle

    src = read_bundle(base)

    def write(external):
        write_bundle(tmp_path / "w.uem", encoder_onnx=src.encoder.path, encoder_fp32_onnx=None,
                     preprocess=src.preprocess, embed_dim=src.embed_dim, prototypes=src.prototypes,
                     domains=[DomainData(n, src.load_vectors(n, mmap=False), d.items)
                              for n, d in src.domains.items()],
                     hnsw=src.hnsw, calibration={}, extra={}, external=external)
        return read_bundle(tmp_path / "w.uem")

    first = write(MilvusIndex(lite))
    cols = set(first.backend["collections"].values())
    assert cols <= _uem_collections(store)
    second = write(MilvusIndex(lite))
    assert not cols & _uem_collections(store)
    assert set(second.backend["collections"].values()) <= _uem_collections(store)
    img = draw("blue", "sketch", np.random.default_rng(3))
    with Engine.open(tmp_path / "w.uem") as m, Engine.open(base) as h:
        assert [x.id for x in m.query(img, "sketch", k=6).hits] == [x.id for x in h.query(img, "sketch", k=6).hits]
    third = write(None)  # back to hnswlib files: the collections go too
    assert third.backend is None and not set(second.backend["collections"].values()) & _uem_collections(store)


@pytest.mark.slow
def test_export_to_milvus_end_to_end(lite, store, tmp_path):
    """`uemctl export RUN -o B --to x.db`: a real (tiny) run exported into Milvus Lite; the engine
    then answers like an hnswlib index built from the bundle's own vectors."""
    torch = pytest.importorskip("torch", reason="export needs uem[train]")
    from uem.engine.index import DomainIndex
    from uem.train.config import ModelConfig, TrainConfig
    from uem.train.model import build_encoder
    from uem.train.run import save_encoder

    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for domain in ("photo", "sketch"):
        for colour in ("red", "green", "blue"):
            (data / domain / colour).mkdir(parents=True)
            for i in range(4):
                draw(colour, domain, rng).save(data / domain / colour / f"{i}.png")
    cfg = TrainConfig(data=str(data), domains=["photo", "sketch"],
                      model=ModelConfig(input_size=32, embed_dim=16, head_hidden=32, grid=1), seed=3)
    torch.manual_seed(cfg.seed)
    save_encoder(tmp_path / "run", build_encoder(cfg.model, pretrained=True).eval(), cfg)
    out = tmp_path / "model.uem"
    assert cli_main(["export", str(tmp_path / "run"), "-o", str(out), "--to", lite, "--calib", "8", "-q"]) == 0
    info = read_bundle(out)
    assert info.backend["kind"] == "milvus" and sorted(info.domains) == ["photo", "sketch"]
    assert set(info.backend["collections"].values()) <= _uem_collections(store)
    q = info.load_vectors("photo", mmap=False)
    with Engine.open(out) as eng:
        ref = DomainIndex.build(info.load_vectors("sketch"), space="ip", M=info.hnsw.M,
                                ef_construction=info.hnsw.ef_construction, ef_search=info.hnsw.ef_search)
        want, _ = ref.search(q, 5)
        got = eng.query_batch(vectors=q, domain="sketch", k=5, source="photo", no_reject=True)
        ids = [it["id"] for it in info.domains["sketch"].items]
        assert [[h.id for h in r.hits] for r in got] == [[ids[j] for j in row] for row in want]
    # a re-export to the same Milvus replaces the collections and drops the old ones
    old = set(info.backend["collections"].values())
    assert cli_main(["export", str(tmp_path / "run"), "-o", str(out), "--to", lite, "--calib", "8", "-q"]) == 0
    new = set(read_bundle(out).backend["collections"].values())
    assert not old & new and not old & _uem_collections(store) and new <= _uem_collections(store)


def test_second_process_on_a_lite_file_gets_one_line(served, store, tmp_path):
    """Milvus Lite: one process per .db (this test process holds it through `store`)."""
    img = tmp_path / "q.png"
    draw("red", "photo", np.random.default_rng(4)).save(img)
    res = subprocess.run([sys.executable, "-m", "uem.cli.app", "query", str(img), "-d", "sketch",
                          "-b", str(served)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("uemctl: error: cannot connect to Milvus") and res.stderr.count("\n") == 1
    assert "one process at a time" in res.stderr


def test_open_engine_follows_a_move_on_reload(base, lite, tmp_path):
    bundle = tmp_path / "m.uem"
    shutil.copytree(base, bundle)
    img = draw("red", "photo", np.random.default_rng(12))
    with Engine.open(bundle, threads=1) as eng:
        before = [h.id for h in eng.query(img, "sketch", k=5).hits]
        ext = MilvusIndex(lite)
        try:
            reindex_bundle(bundle, ext)
        finally:
            ext.close()
        assert eng.reload() and eng.info()["backend"]["kind"] == "milvus"
        assert [h.id for h in eng.query(img, "sketch", k=5).hits] == before


def test_open_refuses_a_collection_that_lost_rows(base, lite, store, tmp_path):
    bundle = _to_milvus(base, tmp_path / "m.uem", lite)
    coll = read_bundle(bundle).backend["collections"]["sketch"]
    store._client.delete(coll, filter="id == 3")
    with pytest.raises(BackendError, match="holds 15 of the bundle's 16 rows"):
        Engine.open(bundle)


def test_first_search_of_a_snapshot_is_strong_then_bounded():
    """A Strong search waits for the server's time tick (200 ms on a server) so that rows committed
    before the snapshot are found; once one returned, the snapshot's searches need no wait."""
    from uem.engine.milvus import MilvusDomain

    class Recorder:
        def __init__(self):
            self.levels = []

        def search(self, collection, queries, k, count, ef, consistency="Strong"):
            self.levels.append(consistency)
            return np.zeros((len(queries), k), np.int64), np.zeros((len(queries), k), np.float32)

    rec = Recorder()
    q = np.ones((1, 4), np.float32)
    first = MilvusDomain(rec, "c", 10, 4, 16)
    first.search(q, 3)
    first.search(q, 3)
    MilvusDomain(rec, "c", 11, 4, 16).search(q, 3)   # the snapshot after an add: Strong again
    assert rec.levels == ["Strong", "Bounded", "Strong"]
