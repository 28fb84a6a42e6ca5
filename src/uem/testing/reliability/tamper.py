"""Bundle tampering: every file of a bundle, every way (byte flips, truncation, deletion, paths out of
the bundle, symlinks, wrong versions, honestly re-hashed wrong arrays), and random consistent
manifests. Engine.open must refuse each with a BundleError before any file reaches hnswlib or
onnxruntime (`LoaderSpy` watches both).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

from uem.engine.bundle.manifest import FORMAT_VERSION


class LoaderSpy:
    """Records every file handed to hnswlib (Index.load_index) or onnxruntime (InferenceSession)
    while active. A recorder, not a tripwire: the engine wraps loader exceptions into BundleError,
    so a raising spy could be swallowed and pass unnoticed."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._undo: list = []

    def __enter__(self) -> "LoaderSpy":
        import hnswlib
        import onnxruntime

        spy = self
        real_index, real_session = hnswlib.Index, onnxruntime.InferenceSession

        class Index(real_index):  # type: ignore[misc, valid-type]
            def load_index(self, path, *a, **k):
                spy.calls.append(f"hnswlib:{path}")
                return super().load_index(path, *a, **k)

        def session(path, *a, **k):
            spy.calls.append(f"onnxruntime:{path}")
            return real_session(path, *a, **k)
        hnswlib.Index, onnxruntime.InferenceSession = Index, session
        self._undo = [(hnswlib, "Index", real_index), (onnxruntime, "InferenceSession", real_session)]
        return self

    def __exit__(self, *exc) -> None:
        for mod, name, real in self._undo:
            setattr(mod, name, real)


def rewrite_manifest(bundle: Path, m: dict) -> None:
    """Edit the manifest *consistently* (fresh checksum), as a careless tool or an attacker would."""
    from uem.engine.bundle import _checksum

    m = dict(m)
    m.pop("checksum", None)
    m["checksum"] = _checksum(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def _rehash(bundle: Path, m: dict, logical: str) -> dict:
    from uem.engine.bundle import sha256_file

    ent = m["files"][logical]
    p = bundle / ent["path"]
    ent["size"], ent["sha256"] = p.stat().st_size, sha256_file(p)
    return m


def tamper_cases(base: Path, rnd: random.Random, flips: int = 4):
    """(label, function(bundle_dir) -> None) for each tampering of a copy of `base`: for every file
    of the manifest and the manifest itself: byte flips (first, middle, last, `flips` random),
    truncation (empty, half, one byte short), one byte appended, deletion, a directory in its place;
    for every entry: paths leaving the bundle (../, absolute, symlinked file, symlinked generation);
    wrong format versions; an honestly re-hashed index of another dim, vectors of another dtype and
    pickled object arrays."""
    m0 = json.loads((base / "manifest.json").read_text())
    targets = {name: ent["path"] for name, ent in m0["files"].items()}
    targets["manifest.json"] = "manifest.json"
    cases = []

    def flip(rel, pos, mask):
        def f(b):
            p = b / rel
            data = bytearray(p.read_bytes())
            data[pos % len(data)] ^= mask
            p.write_bytes(bytes(data))
        return f

    def cut(rel, keep):
        def f(b):
            p = b / rel
            data = p.read_bytes()
            p.write_bytes(data[:keep(len(data))])
        return f

    def append(rel):
        return lambda b: (b / rel).write_bytes((b / rel).read_bytes() + b"\0")

    def delete(rel):
        return lambda b: (b / rel).unlink()

    def to_dir(rel):
        def f(b):
            (b / rel).unlink()
            (b / rel).mkdir()
        return f

    for name, rel in targets.items():
        size = (base / rel).stat().st_size
        positions = [0, size // 2, size - 1] + [rnd.randrange(size) for _ in range(flips)]
        for pos in positions:
            # the manifest is JSON: XOR 0xFF never turns one valid JSON byte into another
            mask = 0xFF if name == "manifest.json" else rnd.randrange(1, 256)
            cases.append((f"flip {name}@{pos}^{mask:#x}", flip(rel, pos, mask)))
        cases += [(f"empty {name}", cut(rel, lambda n: 0)), (f"half {name}", cut(rel, lambda n: n // 2)),
                  (f"short {name}", cut(rel, lambda n: n - 1)), (f"append {name}", append(rel)),
                  (f"delete {name}", delete(rel)), (f"directory {name}", to_dir(rel))]

    def repoint(logical, new_path):
        def f(b):
            m = json.loads((b / "manifest.json").read_text())
            m["files"][logical]["path"] = new_path(b, m["files"][logical]["path"])
            rewrite_manifest(b, m)
        return f

    def symlink_file(logical):
        def f(b):
            p = b / m0["files"][logical]["path"]
            outside = b.parent / f"outside-{p.name}"
            outside.write_bytes(p.read_bytes())
            p.unlink()
            p.symlink_to(outside)
        return f

    def symlink_generation(b):
        gen = next(iter(targets.values())).split("/", 1)[0]
        outside = b.parent / "outside-generation"
        os.replace(b / gen, outside)
        (b / gen).symlink_to(outside, target_is_directory=True)

    for logical in m0["files"]:
        cases += [
            (f"path ../ {logical}", repoint(logical, lambda b, p: "../" + p)),
            (f"path inner ../ {logical}", repoint(logical, lambda b, p: p.split("/", 1)[0] + "/../../" + p)),
            (f"path absolute {logical}", repoint(logical, lambda b, p: str((b / p).resolve()))),
            (f"path /etc/passwd {logical}", repoint(logical, lambda b, p: "/etc/passwd")),
            (f"path backslash {logical}", repoint(logical, lambda b, p: p.replace("/", "\\"))),
            (f"symlink out {logical}", symlink_file(logical)),
        ]
    cases.append(("symlinked generation directory", symlink_generation))

    def manifest_edit(fn):
        def f(b):
            m = json.loads((b / "manifest.json").read_text())
            fn(b, m)
            rewrite_manifest(b, m)
        return f

    for v in (0, FORMAT_VERSION + 1, 999, "1", None, 1.0, True):  # 0 and the next version are unknown
        cases.append((f"format_version {v!r}", manifest_edit(lambda b, m, v=v: m.__setitem__("format_version", v))))
    cases.append(("format name", manifest_edit(lambda b, m: m.__setitem__("format", "other"))))
    cases.append(("no format_version", manifest_edit(lambda b, m: m.pop("format_version"))))
    cases.append(("hnsw dim != embed_dim", manifest_edit(lambda b, m: m["hnsw"].__setitem__("dim", m["hnsw"]["dim"] + 4))))
    cases.append(("embed_dim changed", manifest_edit(lambda b, m: (m["model"].__setitem__("embed_dim", m["model"]["embed_dim"] + 4),
                                                                   m["hnsw"].__setitem__("dim", m["hnsw"]["dim"] + 4)))))
    cases.append(("hnsw M changed", manifest_edit(lambda b, m: m["hnsw"].__setitem__("M", m["hnsw"]["M"] * 2))))

    def other_dim_index(b, m):
        from uem.engine.index import DomainIndex

        d = m["domains"][0]
        logical = d["files"]["index"]
        p = b / m["files"][logical]["path"]
        v = np.random.default_rng(0).normal(size=(d["count"], m["model"]["embed_dim"] + 4)).astype(np.float32)
        p.unlink()
        DomainIndex.build(v, space="ip", M=m["hnsw"]["M"], ef_construction=40, ef_search=16).save(p)
        _rehash(b, m, logical)

    def npy_swap(kind, arr_fn):
        def f(b, m):
            logical = m["domains"][0]["files"]["vectors"] if kind == "vectors" else m["prototypes"]["centroids"]
            p = b / m["files"][logical]["path"]
            old = np.load(p, allow_pickle=False)
            p.unlink()
            np.save(p, arr_fn(old), allow_pickle=True)
            _rehash(b, m, logical)
        return f
    cases.append(("index of another dim, honestly hashed", manifest_edit(other_dim_index)))
    cases.append(("vectors float64, honestly hashed", manifest_edit(npy_swap("vectors", lambda a: a.astype(np.float64)))))
    for kind in ("vectors", "prototypes"):
        cases += [
            (f"{kind} pickled object array, honestly hashed",
             manifest_edit(npy_swap(kind, lambda a: np.array([{"evil": 1}] * len(a), dtype=object)))),
            (f"{kind} transposed, honestly hashed", manifest_edit(npy_swap(kind, lambda a: np.ascontiguousarray(a.T)))),
        ]
    return cases


def run_tamper_matrix(base: Path, work: Path, seed: int, flips: int = 4) -> tuple[int, list[str]]:
    """Apply every tamper case to a fresh copy of `base`; Engine.open must raise BundleError and no
    file may reach hnswlib or onnxruntime. Returns (cases tried, failures)."""
    import shutil

    from uem.engine import Engine
    from uem.engine.errors import BundleError

    cases = tamper_cases(base, random.Random(seed), flips)
    failures = []
    for i, (label, apply) in enumerate(cases):
        case_dir = work / f"t{i}"
        b = case_dir / "model.uem"
        shutil.copytree(base, b, symlinks=True)
        apply(b)
        with LoaderSpy() as spy:
            try:
                Engine.open(b, threads=1)
                failures.append(f"{label}: opened without error")
            except BundleError as e:
                if not str(e).strip() or "\n" in str(e):
                    failures.append(f"{label}: unclear error {str(e)!r}")
            except Exception as e:  # any other exception type is a failure
                failures.append(f"{label}: {type(e).__name__}: {e}")
        if spy.calls:
            failures.append(f"{label}: reached a loader before failing: {spy.calls}")
        shutil.rmtree(case_dir, ignore_errors=True)
    return len(cases), failures


def _random_json_value(rnd: random.Random):
    return rnd.choice([None, True, -1, 0, 2**63, 1e308, float("1e-300"), "", "x" * 300, "../../etc/passwd",
                       [], {}, [1, 2], {"a": 1}, "g000001/encoder.onnx", 3.5])


def manifest_fuzz(base: Path, work: Path, n: int, seed: int) -> tuple[int, dict, list[str]]:
    """n consistent (re-checksummed) manifests, each with 1-3 random values replaced, deleted or
    retyped (the files stay the verified originals). Engine.open must either work or raise
    BundleError — never another exception. Returns (tried, outcome counts, failures)."""
    import copy
    import shutil

    from uem.engine import Engine
    from uem.engine.errors import BundleError

    rnd = random.Random(seed)
    m0 = json.loads((base / "manifest.json").read_text())
    b = work / "model.uem"
    shutil.copytree(base, b, symlinks=True)
    outcomes = {"opened": 0, "BundleError": 0}
    failures = []

    def slots(obj, path=()):
        yield path
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from slots(v, path + (k,))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from slots(v, path + (i,))
    for i in range(n):
        m = copy.deepcopy(m0)
        m.pop("checksum")
        for _ in range(rnd.randint(1, 3)):
            paths = [p for p in slots(m) if p]
            path = rnd.choice(paths)
            parent = m
            for key in path[:-1]:
                parent = parent[key]
            if rnd.random() < 0.2 and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = _random_json_value(rnd)
        try:
            rewrite_manifest(b, m)
        except ValueError:  # e.g. a float the canonical form refuses: not a case
            continue
        try:
            Engine.open(b, threads=1).close()
            outcomes["opened"] += 1
        except BundleError:
            outcomes["BundleError"] += 1
        except Exception as e:
            failures.append(f"case {i}: {type(e).__name__}: {e} (manifest {json.dumps(m)[:300]})")
    return sum(outcomes.values()), outcomes, failures
