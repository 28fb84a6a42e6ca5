"""Concurrency: 8 threads query while one thread adds — every answer comes from one
committed state and no thread ever goes back; two `uemctl index add` processes on one bundle — one
waits for the other's lock, nothing is lost; a writer that cannot get the lock fails cleanly.
The long run: benchmarks/reliability.py --queries N.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from uem.engine import Engine, atomic, bundle
from uem.testing import reliability as rk
from uem.testing.bundles import make_bundle, write_images


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("conc"))


def test_eight_query_threads_while_one_adds(fresh):
    rep = rk.hammer(fresh, queries=800, threads=8, adds=6, per_add=2, seed=3)
    assert rep.errors == [], "\n".join(rep.errors)
    assert rep.queries >= 800 and rep.adds == 6 and rep.states >= 1
    assert Engine.open(fresh).count("sketch") == 12 + 12


def test_hammer_detects_an_inconsistent_answer(fresh, monkeypatch):
    """The consistency check can fail: a search that drops one hit is reported."""
    from uem.engine import index

    real = index.DomainIndex.search

    def lossy(self, queries, k):
        labels, sims = real(self, queries, k)
        return labels[:, 1:], sims[:, 1:]
    monkeypatch.setattr(index.DomainIndex, "search", lossy)
    rep = rk.hammer(fresh, queries=16, threads=2, adds=1, per_add=2, seed=4)
    assert rep.errors and "not one committed state" in rep.errors[0]


def test_two_processes_adding_wait_for_each_other_and_lose_nothing(fresh, tmp_path):
    dirs = []
    for i, colour in enumerate(("red", "blue")):
        write_images(tmp_path / f"in{i}", {"sketch": [colour]}, n_per=15, seed=40 + i)
        dirs.append(tmp_path / f"in{i}" / "sketch")
    procs = [subprocess.Popen(rk.cli("index", "add", str(fresh), str(d), "--domain", "sketch"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in dirs]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("added 15 images" in o for o, _ in outs), outs
    info = bundle.read_bundle(fresh)
    ids = {it["id"] for it in info.domains["sketch"].items}
    assert info.domains["sketch"].count == 12 + 30
    assert {str(p.resolve()) for d in dirs for p in d.rglob("*.png")} <= ids


def test_a_writer_that_cannot_get_the_lock_fails_cleanly(fresh, tmp_path):
    write_images(tmp_path / "in", {"sketch": ["red"]}, n_per=2, seed=5)
    before = rk.bundle_state(fresh)
    with atomic.exclusive_lock(fresh / bundle.LOCK_FILE, 1.0):
        proc = subprocess.run(rk.cli("index", "add", str(fresh), str(tmp_path / "in"), "--domain", "sketch",
                                     "--lock-timeout", "0.2"), capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "another process is writing" in lines[0], proc.stderr
    assert rk.bundle_state(fresh) == before
