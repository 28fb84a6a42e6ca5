"""Parity report: is the int8 model still the model we trained?

Three comparisons over held-out images (never the calibration ones):
  onnx fp32 vs torch   — the export itself is exact (cos ~ 1.0);
  int8 vs onnx fp32    — what quantization costs, per embedding (mean / min cosine);
  top-10 overlap       — what it costs where it matters: for every query of one domain, the share of
                         its 10 nearest neighbours in every other domain that int8 and fp32 agree on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.geometry import top_n
from .onnx import Agreement, compare


def topk(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    """Indices of the exact top-k by inner product (vectors are unit length), best first."""
    return top_n(queries @ database.T, k)[0]


def topk_overlap(ref_q: np.ndarray, ref_db: np.ndarray, test_q: np.ndarray, test_db: np.ndarray,
                 k: int = 10) -> float:
    """Mean |top-k(ref) ∩ top-k(test)| / k over the queries."""
    if len(ref_q) == 0 or len(ref_db) == 0:
        return 1.0
    a = topk(ref_q, ref_db, k)
    b = topk(test_q, test_db, k)
    kk = a.shape[1]
    return float(np.mean([len(set(x) & set(y)) / kk for x, y in zip(a.tolist(), b.tolist())]))


def cross_domain_overlap(ref: dict[str, np.ndarray], test: dict[str, np.ndarray], k: int = 10,
                         ref_db: dict[str, np.ndarray] | None = None,
                         test_db: dict[str, np.ndarray] | None = None) -> float:
    """top-k overlap averaged over every ordered pair of distinct domains (query domain -> target).

    Queries are `ref`/`test`; the searched sets are `ref_db`/`test_db` (default: the queries' own
    sets), e.g. every exported vector of the target domain, embedded by each model.
    """
    ref_db = ref if ref_db is None else ref_db
    test_db = test if test_db is None else test_db
    names = sorted(ref)
    scores = [topk_overlap(ref[q], ref_db[t], test[q], test_db[t], k)
              for q in names for t in sorted(ref_db) if q != t]
    if not scores:  # one domain: neighbours within it (each query finds itself in both models)
        only = names[0]
        return topk_overlap(ref[only], ref_db[only], test[only], test_db[only], k)
    return float(np.mean(scores))


@dataclass
class ParityReport:
    images: int
    onnx_vs_torch: Agreement
    int8_vs_fp32: Agreement
    int8_vs_torch: Agreement
    top10_overlap: float

    def to_dict(self) -> dict:
        return {"images": self.images, "onnx_fp32_vs_torch": self.onnx_vs_torch.to_dict(),
                "int8_vs_fp32": self.int8_vs_fp32.to_dict(), "int8_vs_torch": self.int8_vs_torch.to_dict(),
                "top10_overlap": self.top10_overlap}

    def passed(self, min_cos_mean: float = 0.995, min_overlap: float = 0.9) -> bool:
        return self.int8_vs_fp32.cos_mean >= min_cos_mean and self.top10_overlap >= min_overlap

    def lines(self) -> list[str]:
        a, b = self.int8_vs_fp32, self.onnx_vs_torch
        return [f"parity over {self.images} held-out images:",
                f"  int8 vs fp32   cos mean {a.cos_mean:.4f}  min {a.cos_min:.4f}",
                f"  top-10 overlap {self.top10_overlap:.3f} (cross-domain, int8 vs fp32)",
                f"  onnx vs torch  cos mean {b.cos_mean:.6f}  min {b.cos_min:.6f}  max|diff| {b.max_abs:.2e}"]


def parity_report(torch_vecs: dict[str, np.ndarray], fp32_vecs: dict[str, np.ndarray],
                  int8_vecs: dict[str, np.ndarray], k: int = 10,
                  database_ref: dict[str, np.ndarray] | None = None,
                  database_test: dict[str, np.ndarray] | None = None) -> ParityReport:
    """All three comparisons from per-domain embeddings of the same (held-out) images; the top-k
    overlap searches `database_*` (fp32 and int8 embeddings of everything exported) when given."""
    names = sorted(fp32_vecs)
    cat = lambda d: np.concatenate([d[n] for n in names])  # noqa: E731
    return ParityReport(
        images=int(sum(len(fp32_vecs[n]) for n in names)),
        onnx_vs_torch=compare(cat(fp32_vecs), cat(torch_vecs)),
        int8_vs_fp32=compare(cat(int8_vecs), cat(fp32_vecs)),
        int8_vs_torch=compare(cat(int8_vecs), cat(torch_vecs)),
        top10_overlap=cross_domain_overlap(fp32_vecs, int8_vecs, k, database_ref, database_test))
