"""Neighbourhood contrast: how much closer a query's own-domain neighbours are than its target ones.

score = mean cosine of the query's k nearest items in its OWN domain - mean cosine of its k nearest
items in the TARGET domain; "no match" when the score is above the pair's threshold (Otsu's split of
every source item's score, fitted at export: `uem.export.openset.contrast_calibration`). Why it was
the default once: the embedding keeps a domain gap, and the own-domain neighbours cancel how crowded
the query's region is. Why it no longer is: Otsu always finds two groups, so it rejects a third of
the queries when every concept exists, and on phosphor4 it ranks private queries worse than the
nearest item does (benchmarks/RESULTS-archive.md, "No match on the aligned space"). `--open-set contrast`.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import BundleError
from .record import parse_record

CONTRAST_K = 5            # neighbours per side; k = 3..10 measured within 0.01 AUROC of each other
SELF_COS = 0.9999         # an own-domain hit this close is the query itself (skipped once)


def neighbourhood_contrast(own_sims: np.ndarray, target_sims: np.ndarray, k: int = CONTRAST_K) -> np.ndarray:
    """Per query: mean of its k best own-domain cosines - mean of its k best target cosines.

    Rows are best first and may be ragged (NaN-padded). A leading own-domain hit at cos >= SELF_COS is
    the query itself (an indexed image queried again) and is skipped once, so a stored item and a new
    picture of it score alike. NaN where a side has no neighbour left.
    """
    own = np.atleast_2d(np.asarray(own_sims, np.float64))
    tgt = np.atleast_2d(np.asarray(target_sims, np.float64))
    if own.shape[0] != tgt.shape[0]:
        raise ValueError(f"{own.shape[0]} own-domain rows for {tgt.shape[0]} target rows")
    cols = np.arange(own.shape[1])
    start = (own[:, :1] >= SELF_COS).astype(np.int64) if own.shape[1] else np.zeros((len(own), 1), np.int64)
    keep = (cols >= start) & (cols < start + k) & np.isfinite(own)
    tkeep = (np.arange(tgt.shape[1]) < k) & np.isfinite(tgt)
    with np.errstate(invalid="ignore", divide="ignore"):
        own_mean = np.where(keep, own, 0.0).sum(1) / keep.sum(1)
        tgt_mean = np.where(tkeep, tgt, 0.0).sum(1) / tkeep.sum(1)
    return own_mean - tgt_mean


class ContrastRule:
    """Per-pair thresholds on neighbourhood contrast (the manifest's calibration["contrast"])."""

    def __init__(self, record: dict | None) -> None:
        self.k, self.thresholds = parse_record(record, "contrast", lambda r: (
            int(r.get("k", CONTRAST_K)) if r else 0,
            {str(p): float(v) for p, v in (r.get("thresholds") or {}).items()}))
        if self.k < 0 or not all(math.isfinite(v) for v in self.thresholds.values()):
            raise BundleError("invalid open-set calibration (negative k or non-finite value)")

    def covers(self, pair: str) -> bool:
        return self.k > 0 and pair in self.thresholds

    def score(self, own_sims: np.ndarray, target_sims: np.ndarray) -> float:
        return float(neighbourhood_contrast(np.asarray(own_sims, np.float64).reshape(1, -1),
                                            np.asarray(target_sims, np.float64).reshape(1, -1), self.k)[0])

    def describe(self) -> str:
        return f"neighbourhood contrast, k {self.k}, reject above: " + ", ".join(
            f"{p} {v:.3f}" for p, v in sorted(self.thresholds.items()))
