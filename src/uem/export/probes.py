"""Probes (opt-in, `uemctl export --probes N`): embeddings of wild copies of a sample of each
domain's items, for the "no match" rule.

Why: the anchored rule (engine/openset/anchored.py) learns how close a confident match is from
the bundle's own items, which are all framed alike; a user's picture is farther from everything,
so a rule calibrated on indexed pictures alone refuses more of them (emoji3: 36 % of the queries on
a background whose concept was there; benchmarks/RESULTS.md, "Wild queries"). With probes, export
embeds, per domain, a
placed copy (train/placement.py: the synthetic backdrops, scales and positions training uses;
never the benchmark's photographs) of up to PROBES_PER_DOMAIN items, through the bundle's own
preprocessing and int8 encoder, and stores them in the alignment file with the row of the item
each one copies. Off by default (ExportConfig.probes says why: one threshold then stops finding
missing concepts). The anchored rule's fit (`anchored_calibration`) counts the copy of a
confident match as a confident match too; `uemctl index realign` refits from the stored probes without any image.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..engine.preprocess import PreprocessSpec, normalize, square_pixels
from ..train.placement import placed_view

PROBES_PER_DOMAIN = 256
CHUNK = 64


def probe_rows(n_items: int, domain: str, seed: int, n: int = PROBES_PER_DOMAIN) -> np.ndarray:
    """The seeded, sorted item rows of one domain that get a probe."""
    rng = np.random.default_rng([seed, zlib.crc32(domain.encode("utf-8"))])
    return np.sort(rng.choice(n_items, size=min(n, n_items), replace=False)).astype(np.int64)


def wild_probes(paths: dict[str, Sequence[Path]], spec: PreprocessSpec, embed: Callable[[np.ndarray], np.ndarray],
                seed: int = 0, n: int = PROBES_PER_DOMAIN,
                advance: Callable[[int], None] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({domain: raw (m, D) embeddings of placed copies}, {domain: the (m,) item rows they copy}).

    `paths[d]` are the domain's items in row order (all readable: export keeps only those);
    `embed` maps normalised pictures (m, 3, S, S) to unit rows."""
    probes, rows = {}, {}
    for d, items in paths.items():
        if len(items) == 0:
            continue
        r = probe_rows(len(items), d, seed, n)
        parts = []
        for start in range(0, len(r), CHUNK):   # bounded memory whatever --probes says
            pix = np.stack([placed_view(square_pixels(items[i], spec),
                                        np.random.default_rng([seed, zlib.crc32(d.encode("utf-8")), int(i)]),
                                        spec=spec)
                            for i in r[start:start + CHUNK]])
            parts.append(np.asarray(embed(normalize(pix, spec)), np.float32))
        probes[d] = np.concatenate(parts)
        rows[d] = r
        if advance:
            advance(len(r))
    return probes, rows
