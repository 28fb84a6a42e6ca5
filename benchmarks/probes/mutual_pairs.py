#!/usr/bin/env python
"""How often the mutual CSLS nearest neighbours of two aligned domains are the same item / concept.

Mining such pairs is how unsupervised cross-domain training finds positives; this measures their
precision on a bundle's stored int8 vectors, after the bundle's default per-domain alignment
(labels: the item id `category/identity.png`, read only to score).

    .venv/bin/python benchmarks/probes/mutual_pairs.py /tmp/x/em_default.uem
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from uem.engine.align import mutual_csls_pairs
from uem.engine.bundle import read_bundle
from uem.export.align import AlignConfig, fit_alignment


def main(bundle: str, k: int = 10) -> None:
    info = read_bundle(Path(bundle))
    vecs = {d: info.load_vectors(d, mmap=False) for d in info.domains}
    ident = {d: np.array([it["id"].split("/")[-1] for it in di.items]) for d, di in info.domains.items()}
    cats = {d: np.array([it["id"].split("/")[0] for it in di.items]) for d, di in info.domains.items()}
    alignment, _ = fit_alignment(vecs, AlignConfig(), seed=0)
    aligned = {d: alignment.align(v, d) for d, v in vecs.items()}
    doms = sorted(aligned)
    for i, a in enumerate(doms):
        for b in doms[i + 1:]:
            x, y = mutual_csls_pairs(aligned[a], aligned[b], k)
            print(f"{a}<->{b}: {len(x)} mutual CSLS pairs (of {min(len(x_) for x_ in (vecs[a], vecs[b]))} "
                  f"items); same item {np.mean(ident[a][x] == ident[b][y]):.3f}, "
                  f"same category {np.mean(cats[a][x] == cats[b][y]):.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
