"""Cross-domain positives without labels: mutual nearest neighbours under CSLS, per domain pair,
in the space the bundle is searched in (each domain centred and whitened on its own vectors).

Why these pairs: a picture and its counterpart in another style are most often each other's best
match once the domains' own biases are removed (whitening) and hubs are discounted (CSLS); keeping
only MUTUAL best matches trades coverage for precision. On emoji3, over the default run's 4 epochs
(the first on the untrained grid read-out), about half the items of each pair are mined, a share of
0.647-0.774 of them the same emoji (benchmarks/RESULTS-archive.md, "Training that learns
(2026-12-02): details", mined pairs per epoch); the mining reruns every epoch, on the embedding the
training improves.
Nothing here reads a label. numpy only: the math is the engine's (uem.engine.align).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..engine.align import fit_domains
from ..engine.csls import mutual_csls_pairs


@dataclass
class MinedPairs:
    """Per ordered domain pair (d, e): for every item of d (its slot), the slot of its mutual
    partner in e, or -1. partner[(e, d)] is the inverse of partner[(d, e)]. `means` / `whiteners`
    are the per-domain alignment the pairs were mined in (index = domain), `aligned` each domain's
    vectors in it (unit rows, slot order)."""

    partner: dict[tuple[int, int], np.ndarray]
    means: list[np.ndarray]
    whiteners: list[np.ndarray]
    aligned: list[np.ndarray]

    def pairs(self, d: int, e: int) -> tuple[np.ndarray, np.ndarray]:
        """(slots in d, slots in e) of the mined pairs, by slot in d."""
        p = self.partner[(d, e)]
        i = np.flatnonzero(p >= 0)
        return i, p[i]

    def counts(self) -> dict[tuple[int, int], int]:
        return {(d, e): int(np.sum(p >= 0)) for (d, e), p in self.partner.items() if d < e}

    def to_arrays(self) -> list[np.ndarray]:
        """Flat arrays (to broadcast between processes): means, whiteners, each domain's aligned
        vectors, then each (d, e) partner array in sorted key order."""
        return [np.stack(self.means), np.stack(self.whiteners), *self.aligned,
                *(self.partner[k] for k in sorted(self.partner))]

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], n_domains: int) -> "MinedPairs":
        keys = sorted((d, e) for d in range(n_domains) for e in range(n_domains) if d != e)
        return cls(partner=dict(zip(keys, arrays[2 + n_domains:])), means=list(arrays[0]),
                   whiteners=list(arrays[1]), aligned=list(arrays[2:2 + n_domains]))


def mine(vectors: list[np.ndarray], shrinkage: float, k: int) -> MinedPairs:
    """Mutual CSLS pairs between every two domains of `vectors` (unit rows per domain, slot order),
    after each domain's own shrunk ZCA whitening (uem.engine.align: fitted as export fits it,
    applied as the engine applies it). A domain of one item, or without spread, has nothing to
    whiten and stays as it is (mean 0, identity whitener), as in the engine."""
    names = [str(d) for d in range(len(vectors))]
    fit = fit_domains({n: v for n, v in zip(names, vectors)}, "whiten", shrinkage)
    dim = vectors[0].shape[1]
    means = [fit.means.get(n, np.zeros(dim, np.float32)) for n in names]
    whiteners = [fit.whiteners.get(n, np.eye(dim, dtype=np.float32)) for n in names]
    aligned = [fit.align(np.asarray(v, np.float32), n) for v, n in zip(vectors, names)]
    partner: dict[tuple[int, int], np.ndarray] = {}
    for d, e in itertools.combinations(range(len(vectors)), 2):
        fwd = np.full(len(aligned[d]), -1, np.int64)
        back = np.full(len(aligned[e]), -1, np.int64)
        if len(aligned[d]) and len(aligned[e]):
            i, j = mutual_csls_pairs(aligned[d], aligned[e], min(k, len(aligned[d]), len(aligned[e])))
            fwd[i], back[j] = j, i
        partner[(d, e)], partner[(e, d)] = fwd, back
    return MinedPairs(partner=partner, means=means, whiteners=whiteners, aligned=aligned)
