"""Bundle integrity: every file of a bundle (and the manifest) flipped, truncated,
extended, deleted, replaced by a directory; paths leaving the bundle; wrong versions; honestly
re-hashed files of the wrong shape — each refused by `Engine.open` with a BundleError before any
file reaches hnswlib or onnxruntime. Plus consistent-but-random manifests, and no pickle anywhere.
The long run: benchmarks/reliability.py --tamper-flips N --manifest-fuzz N.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from uem.engine import Engine
from uem.testing import reliability as rk
from uem.testing.bundles import draw, make_aligned_bundle, make_bundle, png_bytes

SEED = 5
SRC = Path(__file__).resolve().parents[1] / "src" / "uem"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    # aligned: the matrix covers alignment.npz and every domain's csls.npy too
    return make_aligned_bundle(tmp_path_factory.mktemp("tamper"), keep_fp32=True)


def test_every_file_every_tampering_is_refused_before_any_loader(base, tmp_path):
    tried, failures = rk.run_tamper_matrix(base, tmp_path, seed=SEED, flips=4)
    assert failures == [], "\n".join(failures)
    files = len(json.loads((base / "manifest.json").read_text())["files"])
    assert tried >= (files + 1) * 13 + files * 6


def test_the_loader_spy_sees_a_good_bundle_load(base):
    """The matrix's 'no loader was called' check can fail: on a good bundle it records the loads."""
    with rk.LoaderSpy() as spy:
        Engine.open(base, threads=1)
    assert sum(c.startswith("onnxruntime:") for c in spy.calls) == 1
    assert sum(c.startswith("hnswlib:") for c in spy.calls) == 2


def test_random_consistent_manifests_open_or_raise_bundle_error(base, tmp_path):
    tried, outcomes, failures = rk.manifest_fuzz(base, tmp_path, n=300, seed=SEED)
    assert failures == [], "\n".join(failures[:10])
    assert tried >= 290 and outcomes["BundleError"] > 0 and outcomes["opened"] > 0


def test_no_pickle_while_opening_querying_adding(base, tmp_path, monkeypatch):
    import shutil

    b = tmp_path / "model.uem"
    shutil.copytree(base, b)
    loads, unpickled = [], []
    real_load = np.load

    def spy_load(*a, **k):
        loads.append(k.get("allow_pickle", False))
        return real_load(*a, **k)

    def no_pickle(*a, **k):
        unpickled.append(a)
        raise AssertionError("pickle used while loading a bundle")
    monkeypatch.setattr(np, "load", spy_load)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    eng = Engine.open(b, threads=1)
    img = png_bytes(draw("red", "sketch", np.random.default_rng(0)))
    eng.query(img, "sketch")
    eng.add("sketch", [img], ids=["new"])
    Engine.open(b, threads=1).reload()
    assert loads and not any(loads) and not unpickled


def test_source_never_unpickles():
    """Every np.load in the runtime passes allow_pickle=False; no pickle import; torch.load (train,
    export) always passes weights_only=True."""
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M), path
        for call in _calls(text, "np.load("):
            assert "allow_pickle=False" in call, (path, call)
        for call in _calls(text, "torch.load("):
            assert "weights_only=True" in call, (path, call)
    assert len(_calls((SRC / "engine" / "bundle" / "reader.py").read_text(), "np.load(")) >= 2  # the scan sees calls


def _calls(text: str, head: str) -> list[str]:
    """The full text of each call `head...)`, nested parentheses included."""
    out = []
    for m in re.finditer(re.escape(head), text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.start():i])
    return out
