"""`uemctl bench --quick` on a tiny bundle (output well formed, never a timing) and the index
benchmark's exact search / synthetic data helpers."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from uem.cli.app import main
from uem.perf.synthetic import ClusterSpec, clustered, exact_topk, recall_at_k, uniform
from uem.testing.bundles import make_bundle


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bench"), keep_fp32=True)


@pytest.fixture(scope="module")
def int8_only(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bench8"))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    c = capsys.readouterr()
    return code, c.out, c.err


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def _verdict(value, target: str):
    """What a target's "met" must say: `value` against "<op> <limit><unit>" (None: not measured)."""
    op, rest = target.split(" ", 1)
    limit = float(re.match(r"[0-9.e+-]+", rest).group())
    assert op in (">=", "<="), target
    return None if value is None else (value >= limit if op == ">=" else value <= limit)


def test_quick_json_is_well_formed(base, capsys):
    code, out, err = run(capsys, "bench", base, "--quick", "--json", "--items", "40")
    assert code == 0, err
    r = json.loads(out)
    assert r["quick"] is True and r["bundle"] == str(base)
    enc = r["encoder"]
    for name in ("onnxruntime int8", "onnxruntime fp32"):
        col = enc["columns"][name]
        assert col["available"] and col["file_bytes"] > 0
        b1 = col["batch1_1thread"]
        assert b1["n"] == r["plan"]["encoder_iters"]
        assert _positive(b1["p50_ms"]) and b1["p99_ms"] >= b1["p50_ms"]
        assert _positive(col["batch32_all_threads"]["images_per_s"])
        # the calling thread's CPU time of a call never exceeds its wall time (one thread, 1 ms slack
        # for the clocks' brackets)
        cpu = col["batch1_1thread_cpu"]
        assert cpu["n"] == b1["n"] and _positive(cpu["p50_ms"]) and cpu["p50_ms"] <= b1["p50_ms"] + 1.0
    torch_col = enc["columns"]["torch eager fp32"]
    assert torch_col["available"] is False and "--run" in torch_col["note"]
    assert set(enc["int8_speedup_batch1"]) == {"vs onnxruntime fp32"}
    par = enc["parity"]
    # The tiny bundle stores the same ONNX file as int8 and fp32 encoder: identical embeddings.
    assert par["images"] > 0 and par["cos_mean"] == pytest.approx(1.0, abs=1e-5)
    assert par["top10_overlap"] == pytest.approx(1.0)

    q = r["query"]
    assert q["rounds"] == r["plan"]["query_rounds"] and q["source"] != q["target"]
    assert list(q["stages"]) == ["decode", "frame", "resize", "normalise", "encode", "search + reject", "reject only"]
    shares = [s["share_of_stage_sum"] for n, s in q["stages"].items() if n != "reject only"]
    assert sum(shares) == pytest.approx(1.0) and all(0 <= s <= 1 for s in shares)
    assert _positive(q["end_to_end"]["p50_ms"]) and 0 <= q["accepted_fraction"] <= 1
    assert q["end_to_end_cpu"]["n"] == q["rounds"] and all("cpu" in s for s in q["stages"].values())
    vs = q["versus"]   # the query next to its encoder alone and the plain network, same rounds
    assert vs["encoder_alone_p50_ms"] == q["stages"]["encode"]["p50_ms"]
    assert vs["end_to_end_vs_encoder"] == pytest.approx(q["end_to_end"]["p50_ms"] / vs["encoder_alone_p50_ms"])
    assert _positive(vs["reference_p50_ms"]) and "Lite0" in vs["reference"]
    assert vs["end_to_end_vs_reference"] == pytest.approx(q["end_to_end"]["p50_ms"] / vs["reference_p50_ms"])
    assert r["reference"]["input_size"] == json.loads((base / "manifest.json").read_text())["model"]["preprocess"]["size"]

    fp = r["footprint"]
    assert fp["as_is"]["items"] == 12 and fp["grown"]["items"] == 40
    for p in (fp["as_is"], fp["grown"]):
        assert _positive(p["open_s"]) and _positive(p["import_s"])
        assert p["rss_after_query_mb"] >= p["rss_after_import_mb"] > 0
    assert set(fp["grown"]["file_bytes"]) == {"index.bin", "vectors.npy", "items.jsonl"}
    # 4 x dim of float32, a count + 2M ids of level-0 links, an 8-byte label (M 8 in the tiny bundle)
    m = json.loads((base / "manifest.json").read_text())
    assert fp["vectors_and_links_bytes"] == 4 * m["model"]["embed_dim"] + 4 + 8 * m["hnsw"]["M"] + 8
    assert fp["rss_per_item_vs_vectors_and_links"] == pytest.approx(
        fp["rss_per_added_item_bytes"] / fp["vectors_and_links_bytes"])

    names = [t["name"] for t in r["targets"]]
    assert len(names) == 10 and len(set(names)) == 10
    for t in r["targets"]:  # every verdict is its value against the stated target; None: unmeasured,
        # or measured below the scale the target is stated at (the note says so)
        below_scale = "the target is at" in t["note"]
        assert t["met"] == (None if below_scale else _verdict(t["value"], t["target"])), t
        assert t["met_cpu"] == _verdict(t["value_cpu"], t["target"]), t
    by = {t["name"].split(",")[0]: t for t in r["targets"]}
    # 40 items is not the 100k of the target: no verdict, and the note says why.
    assert by["engine RSS after open + query"]["met"] is None
    assert "100000" in by["Engine.open time"]["note"]
    assert by["int8 speed-up vs torch eager (batch 1"]["met"] is None
    assert by["RSS per added item / (4 x dim + HNSW links)"]["met"] is None
    assert by["end-to-end query p50 / the plain fp32 network's (same rounds)"]["value"] == vs["end_to_end_vs_reference"]
    assert r["machine"]["logical_cpus"] >= 1


def test_quick_table_and_missing_fp32(int8_only, tmp_path, capsys):
    code, out, err = run(capsys, "bench", int8_only, "--quick", "--no-reference", "--out", tmp_path / "r.json")
    assert code == 0, err
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["encoder"]["columns"]["onnxruntime fp32"]["available"] is False
    assert "reference_p50_ms" not in saved["query"]["versus"] and "--no-reference" in saved["reference"]["note"]
    by = {t["name"]: t for t in saved["targets"]}
    assert by["end-to-end query p50 / the plain fp32 network's (same rounds)"]["met"] is None
    assert "Encoder" in out and "End-to-end Engine.query" in out and "Edge-deployment targets" in out
    assert "--keep-fp32" in out  # the fp32 column says why it is empty
    assert "Traceback" not in err


def test_bad_run_is_one_line(base, tmp_path, capsys):
    code, out, err = run(capsys, "bench", base, "--quick", "--run", tmp_path)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uemctl: error:") and "encoder.pt" in lines[0]


def test_exact_topk_matches_argsort():
    rng = np.random.default_rng(1)
    data, queries = uniform(1000, 16, seed=2), uniform(7, 16, seed=3)
    got = exact_topk(data, queries, 10, block=96)  # blocks smaller and not dividing the data
    want = np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :10]
    assert np.array_equal(got, want)
    assert recall_at_k(got, want) == 1.0
    shuffled = np.stack([rng.permutation(row) for row in got])
    assert recall_at_k(shuffled, want) == 1.0  # recall ignores order
    assert recall_at_k(got[:, :5], want) == pytest.approx(0.5)


def test_synthetic_vectors_are_unit_and_clustered():
    x = clustered(2000, 32, seed=0, spec=ClusterSpec(points_per_cluster=100))
    assert x.dtype == np.float32 and x.shape == (2000, 32)
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(x, clustered(2000, 32, seed=0, spec=ClusterSpec(points_per_cluster=100)))
    u = uniform(2000, 32, seed=0)
    # Clustered points have much closer nearest neighbours than uniform ones.
    def nn1(a):
        s = a @ a.T
        np.fill_diagonal(s, -2)
        return s.max(1).mean()
    assert nn1(x) > nn1(u) + 0.2


def test_shape_stats_hand_computed():
    """6 copies of e0 and 6 of e1: every nearest neighbour is a copy (cos 1), the 10th is from
    the other group (cos 0), a random pair is a copy 5 times in 11, and all variance lies along
    e0 - e1 (participation ratio 1)."""
    from uem.perf.synthetic import shape_stats

    x = np.repeat(np.eye(4, dtype=np.float32)[:2], 6, axis=0)
    s = shape_stats(x, sample=12)
    assert s["nn1_cos"] == pytest.approx(1.0) and s["nn10_cos"] == pytest.approx(0.0)
    assert s["random_pair_cos"] == pytest.approx(5 / 11)
    assert s["participation_ratio"] == pytest.approx(1.0)


def test_fit_spec_comes_closer_than_the_default():
    from uem.perf.synthetic import _mismatch, fit_spec, shape_stats

    real = clustered(300, 32, seed=3, spec=ClusterSpec(shared=0.75, spread=0.6, noise=0.4, centre_dim=64))
    spec, want, got = fit_spec(real)
    default = shape_stats(clustered(300, 32, seed=0), sample=300)
    assert want == shape_stats(real, sample=300)
    assert _mismatch(got, want) < _mismatch(default, want)
