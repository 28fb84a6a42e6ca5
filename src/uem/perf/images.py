"""Which real images a benchmark uses: the bundle's own items (their source paths), spread evenly
over the domains and seeded, so runs are repeatable and nothing extra has to be supplied."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.bundle import BundleInfo


def sample_items(info: BundleInfo, n: int, seed: int = 0,
                 domains: list[str] | None = None) -> list[tuple[str, Path]]:
    """Up to n (domain, path) pairs whose files exist, round-robin over `domains` (default: all)."""
    rng = np.random.default_rng(seed)
    pools = []
    for name in domains or list(info.domains):
        items = info.domains[name].items
        order = rng.permutation(len(items))
        pools.append([(name, Path(items[i]["path"])) for i in order])
    out: list[tuple[str, Path]] = []
    cursors = [0] * len(pools)
    while len(out) < n and any(c < len(p) for c, p in zip(cursors, pools)):
        for j, pool in enumerate(pools):
            while cursors[j] < len(pool) and len(out) < n:
                dom, path = pool[cursors[j]]
                cursors[j] += 1
                if path.is_file():
                    out.append((dom, path))
                    break
    return out
