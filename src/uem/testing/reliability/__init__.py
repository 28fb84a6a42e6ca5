"""Reliability harness shared by the fast tests (tests/test_reliability_*.py) and the long trials
(benchmarks/reliability.py): an image corpus and a seeded byte mutator (`corpus`), a fuzz driver that
runs in a child process, so a crash in a C decoder shows up as a failed trial, not a dead pytest
(`fuzz`), kill -9 trials against bundle writers (`crash`), a query/add hammer that checks every answer
against the chain of committed states (`hammer`), and bundle tampering (`tamper`).

Everything is seeded; nothing here measures time except the per-file hang watchdog of the fuzzer.
Use it as `from uem.testing import reliability as rk`; every name below is re-exported here.
"""

from .corpus import (ORIENTATION_OPS, Case, bmp_with_header, gif_with_header, mutate, mutated_corpus,
                     named_corpus, oriented_jpeg, png_with_header, red_picture, seeds, write_cases,
                     zlib_bomb_png)
from .crash import (BundleState, KillTrial, bundle_state, cli, kill_trial, leftovers, make_tiny_run,
                    referenced_generations, rewrite_kill_trials, same_content, write_and_check_cleanup,
                    writer_kill_trials)
from .fuzz import FUZZ_DOMAIN, FUZZ_K, HANG_LIMIT_S, FuzzReport, fuzz_cli, fuzz_engine
from .hammer import HammerReport, hammer
from .tamper import LoaderSpy, manifest_fuzz, rewrite_manifest, run_tamper_matrix, tamper_cases

__all__ = [
    "ORIENTATION_OPS", "Case", "bmp_with_header", "gif_with_header", "mutate", "mutated_corpus",
    "named_corpus", "oriented_jpeg", "png_with_header", "red_picture", "seeds", "write_cases",
    "zlib_bomb_png",
    "BundleState", "KillTrial", "bundle_state", "cli", "kill_trial", "leftovers", "make_tiny_run",
    "referenced_generations", "rewrite_kill_trials", "same_content", "write_and_check_cleanup",
    "writer_kill_trials",
    "FUZZ_DOMAIN", "FUZZ_K", "HANG_LIMIT_S", "FuzzReport", "fuzz_cli", "fuzz_engine",
    "HammerReport", "hammer",
    "LoaderSpy", "manifest_fuzz", "rewrite_manifest", "run_tamper_matrix", "tamper_cases",
]
