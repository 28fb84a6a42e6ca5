"""Crash safety: kill -9 at seeded random moments during `uemctl index add` (a
real process) and during whole-bundle rewrites (what `uemctl export` does last) -> the bundle opens,
fully verified, holding exactly the old or the new state, and the next write cleans up. A real
`uemctl export` trial is slow (tens of seconds of ONNX export per run): it is marked slow here and
runs 20 times in benchmarks/reliability.py --kill-trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uem.testing import reliability as rk
from uem.testing.bundles import make_bundle, write_images

SEED = 11


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("crash"))


@pytest.fixture(scope="module")
def new_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("new")
    write_images(folder, {"sketch": ["red", "blue"]}, n_per=20, seed=99)
    return folder / "sketch"


def test_kill_9_during_uemctl_index_add(base, new_images, tmp_path):
    trials, failures = rk.writer_kill_trials(
        base, lambda b: rk.cli("index", "add", str(b), str(new_images), "--domain", "sketch"),
        tmp_path, trials=3, seed=SEED, commit_share=0.67)
    assert failures == [], "\n".join(failures)
    assert len(trials) == 3 and all(t.outcome in ("old", "new", "finished") for t in trials)


def test_kill_9_during_whole_bundle_rewrites(base, tmp_path):
    outcomes, failures = rk.rewrite_kill_trials(base, tmp_path / "model.uem", trials=4, seed=SEED)
    assert failures == [], "\n".join(failures)
    assert len(outcomes) == 4


def test_state_check_can_tell_a_mix(base, tmp_path):
    """The old/new classification is not vacuous: a bundle holding neither state is called a mix."""
    import shutil

    from uem.engine import Engine

    b = tmp_path / "model.uem"
    shutil.copytree(base, b)
    old = rk.bundle_state(b)
    eng = Engine.open(b, threads=1)
    eng.add_vectors("sketch", np.ones((2, eng.snapshot().info.embed_dim)), [{"path": "/a"}, {"path": "/b"}])
    new = rk.bundle_state(b)
    eng.add_vectors("photo", np.ones((1, eng.snapshot().info.embed_dim)), [{"path": "/c"}])
    mixed = rk.bundle_state(b)
    assert mixed.checksum != old.checksum and not rk.same_content(mixed, new)
    assert rk.same_content(new, new) and new.checksum != old.checksum


def test_leftovers_are_cleaned_by_the_next_write(base, tmp_path):
    import shutil

    b = tmp_path / "model.uem"
    shutil.copytree(base, b)
    (b / "g000042").mkdir()
    (b / "g000042" / "half.bin").write_bytes(b"x")
    (b / "manifest.json.tmp-1-2").write_text("half")
    (b / ".tmp-export").mkdir()
    assert rk.leftovers(b) == [".tmp-export", "g000042", "manifest.json.tmp-1-2"]
    assert rk.write_and_check_cleanup(b) == []


@pytest.mark.slow
def test_kill_9_during_uemctl_export(base, tmp_path):
    run = rk.make_tiny_run(tmp_path / "run")
    trials, failures = rk.writer_kill_trials(
        base, lambda b: rk.cli("export", str(run), "-o", str(b), "--calib", "8", "-q"),
        tmp_path / "w", trials=2, seed=SEED, compare_vectors=False, commit_share=1.0)
    assert failures == [], "\n".join(failures)


def test_export_scratch_of_killed_processes_is_removed(tmp_path, monkeypatch):
    """`uemctl export` keeps every temporary file in one folder per process; the next export
    removes the folders of processes that are gone (kill -9 cannot clean up after itself)."""
    import os
    import subprocess
    import sys
    import tempfile

    from uem.export import scratch

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"{scratch.PREFIX}{dead}-abc"
    live = tmp_path / f"{scratch.PREFIX}{os.getppid()}-abc"
    foreign = tmp_path / "uem-scratch-notapid"
    for p in (stale, live, foreign):
        (p / "sub").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with scratch.process_scratch() as work:
        assert tempfile.gettempdir() == str(work) and work.parent == tmp_path
        inner = Path(tempfile.mkdtemp())
        assert inner.parent == work
    assert not stale.exists() and live.exists() and foreign.exists() and not work.exists()
    assert tempfile.gettempdir() == str(tmp_path)
