"""Engine API: queries, rejection, clamping, typed errors, incremental add, threads, no torch."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from uem.engine import Engine, Hit, QueryResult
from uem.engine.encoder import Encoder
from uem.engine.errors import BundleError, ImageError, UnknownDomainError
from uem.testing.bundles import DIM, SIZE, draw, make_bundle, make_encoder, png_bytes


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("eng"))


@pytest.fixture(scope="module")
def eng(base) -> Engine:
    return Engine.open(base, threads=1)


def pic(colour, domain, seed=7):
    return draw(colour, domain, np.random.default_rng(seed))


def test_query_finds_the_same_concept_across_domains(eng):
    r = eng.query(pic("red", "photo"), "sketch", k=3, source="photo")
    assert isinstance(r, QueryResult) and r.accepted and r.domain == "sketch" and r.source == "photo"
    assert len(r.hits) == 3 and all(isinstance(h, Hit) for h in r.hits)
    assert all(h.id.startswith("sketch/red/") and Path(h.path).is_file() for h in r.hits)
    assert [h.score for h in r.hits] == sorted((h.score for h in r.hits), reverse=True)


def test_private_concept_rejected_with_reason_and_optional_hits(eng):
    r = eng.query(pic("green", "photo"), "sketch", k=5)
    assert not r.accepted and r.reason == "nearest concept exists only in photo"
    assert r.source == "photo" and r.hits == [] and r.score > 1
    r2 = eng.query(pic("green", "photo"), "sketch", k=5, no_reject=True)
    assert not r2.accepted and len(r2.hits) == 5 and r2.reason == r.reason
    back = eng.query(pic("blue", "sketch"), "photo")
    assert not back.accepted and back.reason == "nearest concept exists only in sketch"


def test_same_domain_search(eng):
    r = eng.query(pic("green", "photo"), "photo", k=4)
    assert r.accepted and r.reason == "same domain"
    assert all("/green/" in h.id for h in r.hits)


def test_k_is_clamped_to_domain_size(eng):
    r = eng.query(pic("red", "photo"), "sketch", k=1000, source="photo")
    assert len(r.hits) == eng.count("sketch") == 12
    assert len({h.id for h in r.hits}) == 12
    with pytest.raises(ValueError):
        eng.query(pic("red", "photo"), "sketch", k=0)


def test_unknown_domain_lists_known_ones(eng):
    with pytest.raises(UnknownDomainError) as e:
        eng.query(pic("red", "photo"), "clipart")
    assert e.value.known == ["photo", "sketch"] and "photo, sketch" in str(e.value)
    with pytest.raises(UnknownDomainError):
        eng.query(pic("red", "photo"), "sketch", source="painting")


def test_bad_images_raise_image_error(eng, tmp_path):
    good = png_bytes(pic("red", "photo"))
    cases = {"zero.png": b"", "text.png": b"hello, not an image\n", "trunc.png": good[: len(good) // 2],
             "random.jpg": np.random.default_rng(0).bytes(500)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageError):
            eng.query(tmp_path / name, "sketch")
    for bad in (tmp_path / "missing.png", tmp_path, b"", np.zeros((4, 4), np.float32)):
        with pytest.raises(ImageError):
            eng.query(bad, "sketch")
    with pytest.raises(ImageError):
        eng.query_batch([good, tmp_path / "zero.png"], "sketch")
    assert eng.query(good, "sketch", source="photo").accepted  # bytes work; engine unharmed


def test_batch_vector_and_embed_agree(eng):
    imgs = [pic("red", "photo", 1), pic("green", "photo", 2)]
    vecs = eng.embed(imgs)
    assert vecs.shape == (2, DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    batch = eng.query_batch(imgs, "sketch", k=2)
    singles = [eng.query(i, "sketch", k=2) for i in imgs]
    by_vec = [eng.query(vector=v * 3.0, domain="sketch", k=2) for v in vecs]
    # the same answers; scores equal up to float rounding (a batch of 2 and a batch of 1 take
    # different onnxruntime kernels on AVX-512 machines, which round differently)
    for a, b, c in zip(batch, singles, by_vec):
        assert [h.id for h in a.hits] == [h.id for h in b.hits] == [h.id for h in c.hits]
        assert a.accepted == b.accepted == c.accepted and a.source == b.source == c.source
        for x in (b, c):
            assert a.score == pytest.approx(x.score, abs=1e-5)
            assert [h.score for h in a.hits] == pytest.approx([h.score for h in x.hits], abs=1e-5)
    assert [r.accepted for r in batch] == [True, False]


def test_info(eng):
    info = eng.info()
    assert info["domains"] == {"photo": 12, "sketch": 12}
    assert info["model"]["embed_dim"] == DIM and info["model"]["preprocess"]["size"] == SIZE
    assert info["hnsw"]["space"] == "ip" and info["prototypes"]["links"] == 1
    assert info["model"]["extra"]["parity"]["top10_overlap"] == 1.0


def test_add_is_persisted_and_visible_after_reopen(fresh, tmp_path):
    eng = Engine.open(fresh, threads=1)
    new = []
    for i in range(3):
        p = tmp_path / f"new_green_{i}.png"
        pic("green", "sketch", 100 + i).save(p)
        new.append(p)
    assert eng.add("sketch", new) == 3
    assert eng.count("sketch") == 15
    r = eng.query(new[0], "sketch", k=1)
    assert r.hits[0].path == str(new[0].resolve())
    assert eng.add("sketch", new) == 0  # same ids: skipped, nothing rewritten
    again = Engine.open(fresh, threads=1)
    assert again.count("sketch") == 15 and again.count("photo") == 12
    assert again.query(new[1], "sketch", k=1).hits[0].id == str(new[1].resolve())
    with pytest.raises(UnknownDomainError):
        eng.add("clipart", new)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    with pytest.raises(ImageError):
        eng.add("sketch", [*new, bad, tmp_path / "x.png"])
    assert Engine.open(fresh).count("sketch") == 15  # nothing written


def test_add_can_skip_bad_images_and_reports_progress(fresh, tmp_path):
    eng = Engine.open(fresh, threads=1)
    good = []
    for i in range(2):
        good.append(tmp_path / f"g{i}.png")
        pic("green", "sketch", 200 + i).save(good[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    seen, ticks = [], []
    added = eng.add("sketch", [good[0], bad, good[1]], ids=["a", "b", "c"],
                    on_bad=lambda img, e: seen.append((img, str(e))),
                    progress=lambda done, total: ticks.append((done, total)))
    assert added == 2 and [img for img, _ in seen] == [bad] and "empty file" in seen[0][1]
    assert ticks[-1] == (3, 3)
    ids = {it["id"] for it in Engine.open(fresh).snapshot().info.domains["sketch"].items}
    assert {"a", "c"} <= ids and "b" not in ids  # ids stay with their images
    assert eng.add("sketch", [bad], on_bad=lambda img, e: None) == 0  # nothing readable: nothing written
    assert Engine.open(fresh).count("sketch") == 14


def test_add_in_memory_images_with_ids(fresh):
    eng = Engine.open(fresh, threads=1)
    assert eng.add("photo", [png_bytes(pic("red", "photo", 5))], ids=["upload-1"],
                   metadata=[{"user": "ann"}]) == 1
    assert Engine.open(fresh).info()["domains"]["photo"] == 13


def test_two_engines_adding_to_one_bundle_lose_nothing(fresh):
    a, b = Engine.open(fresh, threads=1), Engine.open(fresh, threads=1)
    imgs = [png_bytes(pic("red", "sketch", 200 + i)) for i in range(6)]
    errors = []

    def add(eng, lo):
        try:
            for i in range(lo, lo + 3):
                eng.add("sketch", [imgs[i]], ids=[f"x{i}"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    ts = [threading.Thread(target=add, args=(a, 0)), threading.Thread(target=add, args=(b, 3))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    final = Engine.open(fresh)
    assert final.count("sketch") == 18
    ids = {h.id for h in final.query(imgs[0], "sketch", k=100).hits}
    assert {f"x{i}" for i in range(6)} <= ids


def test_queries_in_parallel_with_an_add(fresh):
    eng = Engine.open(fresh, threads=1)
    q = eng.embed([pic("red", "photo", 9)])[0]
    errors, seen = [], set()
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                r = eng.query(vector=q, domain="sketch", k=100, source="photo")
                n = len(r.hits)
                assert n in (12, 14, 16) and len({h.id for h in r.hits}) == n
                seen.add(n)
        except Exception as e:
            errors.append(e)
    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for step in range(2):
            eng.add("sketch", [png_bytes(pic("red", "sketch", 300 + 2 * step + j)) for j in range(2)],
                    ids=[f"s{step}a", f"s{step}b"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors and eng.count("sketch") == 16


def test_open_errors(tmp_path):
    with pytest.raises(BundleError, match="no such bundle"):
        Engine.open(tmp_path / "missing.uem")
    with pytest.raises(BundleError):
        Engine.open(tmp_path)


def test_fixed_batch_encoder(tmp_path):
    enc = Encoder(make_encoder(tmp_path / "fixed.onnx", fixed_batch=4), threads=1)
    x = np.random.default_rng(0).normal(size=(6, 3, SIZE, SIZE)).astype(np.float32)
    dyn = Encoder(make_encoder(tmp_path / "dyn.onnx"), threads=1)
    np.testing.assert_allclose(enc.embed(x), dyn.embed(x), atol=1e-5)
    enc.check(SIZE, DIM)
    with pytest.raises(BundleError):
        enc.check(SIZE * 2, DIM)


def test_query_does_not_import_torch(base):
    code = ("import sys; from uem.engine import Engine; import numpy as np; "
            f"e = Engine.open({str(base)!r}, threads=1); "
            "r = e.query(np.full((40, 40, 3), 200, np.uint8), 'sketch'); "
            "print('torch' in sys.modules, len(r.hits) >= 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_search_falls_back_to_exact_when_hnswlib_gives_up(eng):
    state = eng.snapshot().states["sketch"]
    real = state.index._index

    class GivesUp:
        def knn_query(self, *a, **k):
            raise RuntimeError("Cannot return the results in a contiguous 2D array")

        def __getattr__(self, name):
            return getattr(real, name)
    q = eng.embed([pic("red", "sketch", 3)])
    want = state.index.search(q, 5)
    state.index._index = GivesUp()
    try:
        got = state.index.search(q, 5)
    finally:
        state.index._index = real
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)


_CRASH_CHILD = """
import sys, numpy as np
from uem.engine import Engine
eng = Engine.open(sys.argv[1], threads=1)
rng = np.random.default_rng(int(sys.argv[2]))
print("ready", flush=True)
i = 0
while True:
    eng.add_vectors("sketch", rng.normal(size=(50, eng.snapshot().info.embed_dim)), [{"path": f"/c/{sys.argv[2]}-{i}-{j}"} for j in range(50)])
    i += 1
"""


def test_kill_9_during_add_leaves_old_or_new_state(fresh):
    """A fast version of the crash trials: the bundle always opens, rows come in whole adds."""
    import random
    import signal
    from uem.engine.bundle import read_bundle

    rnd = random.Random(2024)
    counts = [read_bundle(fresh).domains["sketch"].count]
    for trial in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _CRASH_CHILD, str(fresh), str(trial)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        threading.Event().wait(rnd.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        info = read_bundle(fresh)  # verifies every file, count and header
        n = info.domains["sketch"].count
        assert n >= counts[-1] and (n - 12) % 50 == 0
        counts.append(n)
    print("counts after kills:", counts)
    eng = Engine.open(fresh, threads=1)
    assert eng.add_vectors("sketch", np.ones((1, DIM)), [{"path": "/after"}]) == 1
    leftovers = sorted(p.name for p in fresh.iterdir() if p.name.startswith((".tmp", "manifest.json.")))
    assert leftovers == [] and len(list(fresh.glob("g*"))) <= 3


def test_reload_sees_another_process_add_and_close(fresh):
    reader, writer = Engine.open(fresh, threads=1), Engine.open(fresh, threads=1)
    assert reader.reload() is False
    writer.add("photo", [png_bytes(pic("green", "photo", 50))], ids=["g50"])
    assert reader.count("photo") == 12 and reader.reload() is True
    assert reader.count("photo") == 13 and reader.snapshot().generation == writer.snapshot().generation
    reader.close()
    with pytest.raises(BundleError, match="closed"):
        reader.query(pic("red", "photo"), "sketch")


def test_fp32_encoder_option(tmp_path):
    b = make_bundle(tmp_path, keep_fp32=True)
    a, f = Engine.open(b, threads=1), Engine.open(b, threads=1, fp32=True)
    img = pic("red", "photo")
    np.testing.assert_allclose(a.embed([img]), f.embed([img]), atol=1e-6)
    with pytest.raises(BundleError, match="no fp32 encoder"):
        Engine.open(make_bundle(tmp_path / "b"), fp32=True)


def test_neighbourhood_contrast_rule_end_to_end(tmp_path):
    """A bundle calibrated the way export calibrates it (labels never read) rejects each domain's
    private colour and accepts the shared one, in `query`, `Snapshot.decisions` and eval's `reject_fn` alike."""
    from uem.engine.openset.contrast import contrast_calibration
    from uem.eval.engine_scores import reject_fn

    plain = make_bundle(tmp_path / "plain")
    with Engine.open(plain) as e:
        vecs = {d: e.embed([it["path"] for it in e.items(d)]) for d in e.domains}
    cal = contrast_calibration(vecs, k=3)
    bundle = make_bundle(tmp_path / "calibrated", calibration={"contrast": cal})
    with Engine.open(bundle) as e:
        for src, tgt, shared in (("photo", "sketch", "red"), ("sketch", "photo", "red")):
            items = e.items(src)
            paths = [it["path"] for it in items]
            results = e.query_batch(paths, tgt, k=2, source=src)
            assert [r.accepted for r in results] == [it["label"] == shared for it in items]
            assert all("neighbours are much closer" in r.reason for r in results if not r.accepted)
            v = e.embed(paths)
            assert [d.accepted for d in e.snapshot().decisions(v, tgt, source=src)] == [r.accepted for r in results]
            # the source inferred from prototypes gives the same answers
            assert [d.accepted for d in e.snapshot().decisions(v, tgt)] == [r.accepted for r in results]
            accepted, score = reject_fn(e)(v, src, tgt, e.embed([it["path"] for it in e.items(tgt)]))
            assert accepted.tolist() == [r.accepted for r in results]
            assert np.allclose(score, [r.score for r in results], atol=1e-5)
