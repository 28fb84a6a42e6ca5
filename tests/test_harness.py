import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uem.engine.errors import DataError
from uem.eval.harness import evaluate, parse_pairs, split_images
from uem.eval.protocols import split_categories
from uem.eval.labels import category_from_folder, identity_of, load_labels
from eval_helpers import threshold_rejector

# Two domains, categories c1 = {x, y}, c2 = {z}; 2-D embeddings chosen so every number below can
# be worked out by hand (cosines of unit vectors = dot products).
VECTORS = {
    ("a", "x"): (1.0, 0.0), ("a", "y"): (0.8, 0.6), ("a", "z"): (0.0, 1.0),
    ("b", "x"): (0.6, 0.8), ("b", "y"): (1.0, 0.0), ("b", "z"): (0.0, 1.0),
}
CATEGORY = {"x": "c1", "y": "c1", "z": "c2"}


def _png(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)


@pytest.fixture
def tiny(tmp_path):
    for (domain, ident) in VECTORS:
        _png(tmp_path / domain / CATEGORY[ident] / f"{ident}.png", (200, 10, 10))
    return tmp_path


def lookup_embed(paths):
    """The hand-made vectors, found from <domain>/<category>/<identity>.png."""
    return np.array([VECTORS[(Path(p).parent.parent.name, Path(p).stem)] for p in paths], np.float32)


def _pair(res, name):
    return next(p for p in res["pairs"] if p["pair"] == name)


def test_labels_from_folders(tmp_path):
    _png(tmp_path / "photo" / "dog" / "deep" / "er" / "1f415.png", (1, 2, 3))
    _png(tmp_path / "sketch" / "dog" / "1f415.png", (1, 2, 3))
    labels = load_labels(tmp_path)
    assert labels["photo"].categories.tolist() == ["dog"]            # first sub-folder only
    assert labels["photo"].identities.tolist() == ["1f415"]          # the file stem
    assert identity_of("x/y/1f600-200d.png") == "1f600-200d"
    with pytest.raises(DataError, match="no category folder"):
        category_from_folder(tmp_path / "photo" / "loose.png", tmp_path / "photo")


def test_image_without_category_folder_is_an_error(tmp_path):
    _png(tmp_path / "photo" / "loose.png", (1, 2, 3))
    _png(tmp_path / "sketch" / "cat" / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match="no category folder"):
        load_labels(tmp_path)


def test_labels_csv_overrides_folders(tmp_path):
    _png(tmp_path / "photo" / "p1.png", (1, 2, 3))
    _png(tmp_path / "sketch" / "any" / "s1.png", (1, 2, 3))
    csv = tmp_path / "labels.csv"
    csv.write_text(f"path,category\nphoto/p1.png,dog\n{tmp_path / 'sketch' / 'any' / 's1.png'},cat\n")
    labels = load_labels(tmp_path, labels_csv=csv)
    assert labels["photo"].categories.tolist() == ["dog"] and labels["sketch"].categories.tolist() == ["cat"]
    csv.write_text("photo/p1.png,dog\n")
    with pytest.raises(DataError, match="no label"):
        load_labels(tmp_path, labels_csv=csv)


def test_parse_pairs(tiny):
    assert parse_pairs(None, ["b", "a"]) == [("a", "b"), ("b", "a")]
    assert parse_pairs(["a->b", "b:a", ("a", "b")], ["a", "b"]) == [("a", "b"), ("b", "a"), ("a", "b")]
    with pytest.raises(DataError, match="unknown domain"):
        parse_pairs(["a->c"], ["a", "b"])
    with pytest.raises(ValueError):
        parse_pairs(["a->a"], ["a", "b"])


def test_hand_computed_close_set(tiny):
    res = evaluate(lookup_embed, tiny, k=(1, 2))
    ab = _pair(res, "a->b")
    # a/x (1,0) -> b: x .6, y 1, z 0  -> [y, x, z]: top-1 wrong, AP(c1) = 1
    # a/y (.8,.6) -> b: x .96, y .8, z .6 -> [x, y, z]: top-1 wrong, AP(c1) = 1
    # a/z (0,1) -> b: x .8, y 0, z 1 -> [z, x, y]: top-1 right, AP(c2) = 1
    assert ab["top1_identity"] == pytest.approx(1 / 3)
    assert ab["map"] == pytest.approx(1.0)
    # P@2: x 2/2, y 2/2, z 1/2 -> 5/6
    assert ab["p_at_k"]["2"] == pytest.approx(5 / 6)
    ba = _pair(res, "b->a")
    # b/x (.6,.8) -> a: x .6, y .96, z .8 -> [y, z, x]: AP(c1) = (1/1 + 2/3)/2 = 5/6
    # b/y (1,0)   -> a: x 1, y .8, z 0   -> [x, y, z]: AP 1 (top-1 wrong)
    # b/z (0,1)   -> a: x 0, y .6, z 1   -> [z, y, x]: AP 1 (top-1 right)
    assert ba["top1_identity"] == pytest.approx(1 / 3)
    assert ba["map"] == pytest.approx((5 / 6 + 1 + 1) / 3)            # 0.9444
    # class-balanced: c1 (5/6 + 1)/2 = 11/12, c2 1 -> (11/12 + 1)/2 = 23/24
    assert ba["map_class_balanced"] == pytest.approx(23 / 24)
    assert ba["n_queries"] == 3 and ba["n_scored"] == 3 and ba["n_identity"] == 3
    assert res["summary"]["mean_map"] == pytest.approx((1 + 17 / 18) / 2)
    json.dumps(res, allow_nan=False)                                   # JSON-able as it is


def test_each_domain_is_embedded_once(tiny):
    calls = []

    def counting(paths):
        calls.append(Path(paths[0]).parent.parent.name)
        return lookup_embed(paths)

    evaluate(counting, tiny)
    assert sorted(calls) == ["a", "b"]


def test_open_set_with_a_reject_hook(tiny):
    seen = {}

    def reject(qv, q_domain, t_domain, tv):
        seen[(q_domain, t_domain)] = (qv.shape, tv.shape)
        return threshold_rejector(0.1)(qv, q_domain, t_domain, tv)

    res = evaluate(lookup_embed, tiny, protocol="open", seed=0, reject_fn=reject)
    ab = _pair(res, "a->b")
    kept = ab["split"]["retrieval_categories"]
    assert len(kept) == 1                                              # ceil(2 / 2) of {c1, c2}
    assert seen[("a", "b")] == ((3, 2), (ab["n_retrieval"], 2))
    os_ = ab["open_set"]
    n_private = 2 if kept == ["c2"] else 1
    assert os_["n_private"] == n_private and os_["n_shared"] == 3 - n_private
    # the numbers are the metrics of what the hook returned
    acc = np.array(os_["scores"]) <= 0.1
    priv = np.array(os_["private"], dtype=bool)
    assert os_["private_detection"] == pytest.approx(np.mean(~acc[priv]))
    assert os_["known_acceptance"] == pytest.approx(np.mean(acc[~priv]))
    assert ab["n_scored"] == 3 - n_private                               # mAP over shared queries only
    assert any(e["private"] for e in ab["examples"])                   # the sheet shows a private query
    assert "mean_h_score" in res["summary"]


def test_partial_keeps_half_the_query_categories(tiny):
    res = evaluate(lookup_embed, tiny, protocol="partial", seed=1)
    for p in res["pairs"]:
        assert p["n_query_categories"] == 1 and p["n_retrieval_categories"] == 2 and p["n_private"] == 0


def test_pixel_embedding_on_generated_images(tmp_path):
    # each identity has its own colour; the "line-art" domain is a lighter version of it
    colours = {"x": (220, 30, 30), "y": (30, 200, 30), "z": (30, 30, 220)}
    for ident, col in colours.items():
        _png(tmp_path / "colour" / CATEGORY[ident] / f"{ident}.png", col)
        _png(tmp_path / "light" / CATEGORY[ident] / f"{ident}.png", tuple(min(255, c + 30) for c in col))

    def mean_colour(paths):
        return np.array([np.asarray(Image.open(p), np.float32).mean(axis=(0, 1)) - 128 for p in paths])

    res = evaluate(mean_colour, tmp_path, pairs=["colour->light"], n_examples=2)
    p = res["pairs"][0]
    assert p["top1_identity"] == 1.0                     # the same colour is always the nearest
    assert 0.5 < p["map"] <= 1.0
    assert len(p["examples"]) == 2 and len(p["examples"][0]["hits"]) == 3   # k clamped to 3 items


def test_bad_embed_fn_output(tiny):
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda paths: np.zeros((len(paths) + 1, 4)), tiny)
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda paths: np.full((len(paths), 4), np.nan), tiny)


def test_constant_embedding_scores_chance(tiny):
    # every score ties: top-1 = 1/3 (one right item of 3), AP is the tie expectation, not order luck
    res = evaluate(lambda paths: np.ones((len(paths), 4), np.float32), tiny)
    ab = _pair(res, "a->b")
    assert ab["top1_identity"] == pytest.approx(1 / 3)
    # c1 query: 2 relevant of 3 tied: placements {1,2}: 1, {1,3}: 5/6, {2,3}: 7/12 -> 29/36
    # c2 query: 1 relevant of 3 tied: (1 + 1/2 + 1/3)/3 = 11/18
    assert ab["map"] == pytest.approx((29 / 36 * 2 + 11 / 18) / 3)


def test_eval_imports_without_torch_or_matplotlib():
    code = ("import sys, uem.eval, uem.eval.harness, uem.eval.report; "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_split_images_gives_bare_path_lists(tiny):
    out = split_images(tiny, "a", "b", protocol="open", seed=0)
    kept = set(split_categories(["c1", "c2"], ["c1", "c2"], "open", 0).retrieval)
    assert len(out["a"]) == 3                                   # open: the query side keeps all
    assert {p.parent.name for p in out["b"]} == kept and all(isinstance(p, Path) for p in out["b"])


def test_train_never_reads_labels():
    # only uem.eval turns folders into labels; nothing under uem/train may import the parts that
    # read them (metrics and protocols are label-free and allowed)
    reads_labels = re.compile(r"eval\.(labels|harness|report)|load_labels|from (uem|\.\.)\.?eval import|import uem\.eval\b(?!\.)")
    train = Path(__file__).resolve().parents[1] / "src" / "uem" / "train"
    for f in train.rglob("*.py"):
        assert not reads_labels.search(f.read_text()), f
