"""Score an exported bundle: its int8 encoder embeds DATA, its prototypes decide rejection.

This is what `uemctl eval` runs. Retrieval is scored exactly over the engine's aligned vectors (the
HNSW index only approximates that ranking; the export parity report measures the difference), and
open-set rejection is the engine's own rule, so the numbers describe what a user of the bundle gets.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

from .harness import evaluate
from .report import write_report


def evaluate_bundle(bundle: str | Path, data: str | Path, *, protocol: str = "close",
                    pairs: Iterable | None = None, seed: int = 0, out: str | Path | None = None,
                    floor: str | Path | None = None, labels_csv: str | Path | None = None,
                    threads: int | None = None, sheets: bool = True, command: str | None = None,
                    log: Callable[[str], None] | None = None, queries: str = "clean") -> dict:
    """Results of `bundle` on `data` under `protocol`; with `out`, also report.md + PNG plots there.
    `queries="wild"` scores every pair again with re-framed queries (their copies kept in out/wild)."""
    from ..engine import Engine
    from .engine_scores import pair_scores, reject_fn

    eng = Engine.open(bundle, threads=threads)
    results = evaluate(lambda paths: eng.embed(paths), data, pairs=pairs, protocol=protocol, seed=seed,
                       reject_fn=reject_fn(eng), labels_csv=labels_csv, log=log,
                       score_fn=partial(pair_scores, eng), queries=queries,
                       wild_dir=None if out is None else Path(out) / "wild")
    results["bundle"] = str(Path(bundle).resolve())
    if out is not None:
        floor_data = json.loads(Path(floor).read_text(encoding="utf-8")) if floor else None
        results["written"] = {k: str(v) for k, v in write_report(
            results, out, floor=floor_data, title=f"uem evaluation — {protocol}-set",
            command=command, sheets=sheets).items()}
    return results
