"""Image-input fuzzing: a generated corpus of hostile and odd files plus seeded
mutants of valid PNG/JPEG/GIF/WebP/BMP/TIFF/PPM files go through `Engine.query` (in a child
process, so a crash in a C decoder fails the test instead of killing pytest) and through a real
`uemctl query` process. Every file must end in a correct answer or a typed error / one stderr line,
and never hang. The long run: benchmarks/reliability.py --fuzz N.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from uem.engine import load_image
from uem.testing import reliability as rk
from uem.testing.bundles import make_bundle

MUTANTS = 1500
SEED = 2026


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus") / "files"
    cases = rk.write_cases(folder, rk.named_corpus() + rk.mutated_corpus(MUTANTS, SEED))
    return folder, cases


def test_corpus_and_mutants_through_engine_and_cli(base, corpus):
    folder, cases = corpus
    # A hang watchdog, not a timing check: 10 s per file on a shared machine (the benchmark holds
    # files to the 2 s; the biggest decodable mutant, ~27 MP, took 0.4 s on an idle core).
    rep = rk.fuzz_engine(base, folder, cases, limit=10.0)
    assert rep.failures == [], "\n".join(rep.failures[:20])
    assert len(rep.records) == len(cases) >= MUTANTS + 80
    # the fuzzer reaches the decoders: plenty of mutants still decode, plenty do not
    mutants = [r for r in rep.records if r["name"].startswith("mut")]
    answered = sum(r["outcome"] == "answer" for r in mutants)
    assert 0.05 * MUTANTS < answered < 0.95 * MUTANTS
    seen, fails = rk.fuzz_cli(base, folder, rep.records)
    assert fails == [], "\n".join(fails)
    assert seen == len(cases)


@pytest.mark.parametrize("name", ["zero-bytes.png", "text.png", "huge-ihdr.png"])
def test_bad_file_real_process_one_line_exit_2(base, corpus, name):
    folder, cases = corpus
    proc = subprocess.run([sys.executable, "-m", "uem.cli.app", "query", str(folder / name),
                           "--domain", "sketch", "--bundle", str(base), "--threads", "1"],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"uemctl: error: {folder / name}: "), proc.stderr
    assert cases[name].needle in lines[0]


def test_mutator_is_seeded_and_changes_files():
    a, b = rk.mutated_corpus(50, 7), rk.mutated_corpus(50, 7)
    assert [c.data for c in a] == [c.data for c in b]
    seeds = rk.seeds()
    assert sum(c.data != seeds[c.name.split("-", 1)[1].rsplit(".", 1)[0]] for c in a) == 50


def test_all_eight_exif_orientations_are_applied():
    """Each orientation gives the picture the matching transform (table written independently of
    PIL's exif_transpose); checked on the mean colour of each quadrant of a 4-colour picture."""
    a = np.zeros((24, 48, 3), np.uint8)
    a[:12, :24], a[:12, 24:], a[12:, :24], a[12:, 24:] = (250, 0, 0), (0, 250, 0), (0, 0, 250), (250, 250, 0)
    im = Image.fromarray(a)

    def quadrants(x: np.ndarray) -> np.ndarray:
        h, w = x.shape[0] // 2, x.shape[1] // 2
        return np.array([x[:h, :w].mean((0, 1)), x[:h, w:].mean((0, 1)),
                         x[h:, :w].mean((0, 1)), x[h:, w:].mean((0, 1))])
    for orientation, op in rk.ORIENTATION_OPS.items():
        got = np.asarray(load_image(rk.oriented_jpeg(orientation, im)), np.float32)
        want = np.asarray(im if op is None else im.transpose(op), np.float32)
        assert got.shape == want.shape, orientation
        assert np.abs(quadrants(got) - quadrants(want)).max() < 25, orientation
