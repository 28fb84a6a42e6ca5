"""Aligned bundles end to end: the indexes hold aligned vectors, `Engine.query` ranks exactly as
`uemctl eval` scores (`uem.eval.engine_scores.pair_scores`), the source domain is inferred, and an
add aligns new items with the stored transform and updates only the CSLS statistics it touches."""

import json

import numpy as np
import pytest
from uem.testing.bundles import draw, make_aligned_bundle

from uem.engine import Engine
from uem.engine.align import csls_item_stats
from uem.engine.bundle import read_bundle
from uem.eval.engine_scores import pair_scores


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_aligned_bundle(tmp_path_factory.mktemp("aligned"), n_per=5)


def test_manifest_records_the_alignment_and_its_files(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["alignment"]["kind"] == "whiten" and m["alignment"]["maps"] == ["photo<->sketch"]
    assert m["alignment"]["csls"] == {"k": 3, "candidates": 8}
    assert "alignment.npz" in m["files"] and all("csls" in d["files"] for d in m["domains"])
    info = read_bundle(bundle)
    assert info.summary()["alignment"]["kind"] == "whiten"


def test_indexes_hold_aligned_vectors_and_vectors_npy_the_raw_ones(bundle):
    info = read_bundle(bundle)
    with Engine.open(bundle) as eng:
        for d in info.domains:
            raw = info.load_vectors(d, mmap=False)
            aligned = info.alignment.align(raw, d)
            assert not np.allclose(raw, aligned, atol=1e-3)
            lab, sims = eng.snapshot().states[d].index.search(aligned, 1)
            assert np.array_equal(lab[:, 0], np.arange(len(raw))) and np.allclose(sims[:, 0], 1, atol=1e-5)


@pytest.mark.parametrize("source,target", [("photo", "sketch"), ("sketch", "photo")])
def test_engine_ranks_exactly_as_eval_scores(bundle, source, target):
    info = read_bundle(bundle)
    q, t = info.load_vectors(source, mmap=False), info.load_vectors(target, mmap=False)
    ids = [it["id"] for it in info.domains[target].items]
    with Engine.open(bundle) as eng:
        scores = pair_scores(eng, q, source, target, t)
        results = eng.query_batch(vectors=q, domain=target, k=5, source=source, no_reject=True)
    for row, res in zip(scores, results):
        want = np.argsort(-row, kind="stable")[:5]
        assert [h.id for h in res.hits] == [ids[j] for j in want]
        np.testing.assert_allclose([h.rank_score for h in res.hits], row[want], atol=1e-5)


def test_source_is_inferred_for_every_item(bundle):
    info = read_bundle(bundle)
    with Engine.open(bundle) as eng:
        for d in info.domains:
            other = next(x for x in info.domains if x != d)
            got = [r.source for r in eng.query_batch(vectors=info.load_vectors(d, mmap=False), domain=other, k=1, no_reject=True)]
            assert got == [d] * info.domains[d].count


def test_add_aligns_with_the_stored_transform_and_keeps_old_results(bundle, tmp_path):
    import shutil

    copy = tmp_path / "b.uem"
    shutil.copytree(bundle, copy)
    before = read_bundle(copy)
    sketch_q = before.load_vectors("sketch", mmap=False)
    with Engine.open(copy) as eng:
        old = eng.query_batch(vectors=sketch_q, domain="photo", k=5, source="sketch", no_reject=True)
        rng = np.random.default_rng(9)
        added = eng.add("photo", [draw("green", "photo", rng), draw("red", "photo", rng)], ids=["new1", "new2"])
        assert added == 2
        new = eng.query_batch(vectors=sketch_q, domain="photo", k=7, source="sketch", no_reject=True)
    after = read_bundle(copy)
    # the transform is not refitted by an add
    assert after.manifest["files"]["alignment.npz"] == before.manifest["files"]["alignment.npz"]
    # old photo rows keep their statistics against sketch (sketch did not change)
    np.testing.assert_array_equal(after.domains["photo"].csls[:before.domains["photo"].count],
                                  before.domains["photo"].csls)
    # every touched statistic equals a full recomputation over the new sets
    aligned = {d: after.aligned_vectors(d) for d in after.domains}
    full = csls_item_stats(aligned, after.alignment, after.csls_order)
    for d in after.domains:
        np.testing.assert_allclose(after.domains[d].csls, full[d], atol=1e-6)
    # photo items' ranking statistics did not change, so among old items the order is the same
    for o, n in zip(old, new):
        kept = [h for h in n.hits if h.id not in ("new1", "new2")][:3]
        assert [h.id for h in kept] == [h.id for h in o.hits[:3]]
        np.testing.assert_allclose([h.score for h in kept], [h.score for h in o.hits[:3]], atol=1e-6)


def test_a_bundle_without_alignment_opens_and_ranks_by_cosine(tmp_path):
    from uem.testing.bundles import make_bundle

    b = make_bundle(tmp_path, n_per=3)
    info = read_bundle(b)
    assert "alignment" not in info.manifest and not info.alignment.active
    q, t = info.load_vectors("photo", mmap=False), info.load_vectors("sketch", mmap=False)
    with Engine.open(b) as eng:
        np.testing.assert_allclose(pair_scores(eng, q, "photo", "sketch", t), q @ t.T, atol=1e-6)
        assert all(h.rank_score is None for h in eng.query_batch(vectors=q, domain="sketch", no_reject=True)[0].hits)


def test_uemctl_eval_scores_the_engine_ranking(bundle):
    from uem.eval.bundle_eval import evaluate_bundle
    from uem.eval.labels import load_labels
    from uem.eval.metrics import retrieval_metrics

    data = bundle.parent / "data"
    res = evaluate_bundle(bundle, data, sheets=False)
    labels = load_labels(data)
    with Engine.open(bundle) as eng:
        vecs = {d: eng.embed(labels[d].paths) for d in labels}
        for p in res["pairs"]:
            q, t = labels[p["query"]], labels[p["target"]]
            want = retrieval_metrics(pair_scores(eng, vecs[q.domain], q.domain, t.domain, vecs[t.domain]),
                                     q.categories, t.categories, q.identities, t.identities, (1,))
            assert p["map"] == pytest.approx(want["map"]) and p["top1_identity"] == pytest.approx(want["top1_identity"])
            # the report's example hits carry the engine's ranking scores (CSLS), not raw cosines
            ex = p["examples"][0]
            i = [str(x.resolve().relative_to(data.resolve())) for x in q.paths].index(ex["query"])
            scores = pair_scores(eng, vecs[q.domain], q.domain, t.domain, vecs[t.domain])[i]
            assert ex["hits"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-5)
            assert ex["hits"][0]["score"] != pytest.approx(float((vecs[q.domain][i] @ vecs[t.domain].T).max()), abs=1e-3)


def test_versions_1_and_2(bundle, tmp_path):
    import shutil

    from uem.engine.bundle import _checksum
    from uem.engine.errors import BundleError

    m = json.loads((bundle / "manifest.json").read_text())
    assert m["format_version"] == 2  # aligned bundles need this uem
    copy = tmp_path / "v1.uem"
    shutil.copytree(bundle, copy)
    m["format_version"] = 1  # an older writer would append raw rows to an aligned index
    m.pop("checksum")
    m["checksum"] = _checksum(m)
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="alignment in a version-1 bundle"):
        read_bundle(copy)
