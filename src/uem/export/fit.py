"""What a bundle derives from its raw vectors without labels: alignment, prototypes, open-set calibration.

Why a module of its own: `uemctl export` and `uemctl index realign` both call it, and realign never
runs a network, so this must not import torch, onnx or onnxruntime (the export pipeline does).
"""

from __future__ import annotations

import numpy as np

from ..engine.openset import ALPHA, FitInputs, fit_calibration
from .align import AlignConfig, fit_alignment


def fit_from_vectors(vectors: dict[str, np.ndarray], align: AlignConfig, *, merge_rule: str, open_set: str,
                     merge: bool, k_prototypes: int | None, proto_seed: int, seed: int,
                     open_set_alpha: float = ALPHA, probes: dict[str, np.ndarray] | None = None,
                     probe_rows: dict[str, np.ndarray] | None = None):
    """Everything a bundle derives from its raw vectors without labels: the alignment (and its
    log), the prototype graph and the open-set calibration (the rule named `open_set`, fitted by
    its own `Rule.fit`), both on the aligned vectors (where the engine compares a query with them).
    `probes`: raw embeddings of wild copies of some items and their rows (export/probes.py), kept
    in the alignment and handed to the rule's fit. Shared by export and `uemctl index realign`."""
    from ..train.prototypes import build_prototype_graph

    alignment, align_log = fit_alignment(vectors, align, seed=seed, probes=probes, probe_rows=probe_rows)
    aligned = {d: alignment.align(v, d) for d, v in vectors.items()}
    wild = {d: (alignment.probe_rows[d], alignment.align(p, d)) for d, p in alignment.probes.items()}
    # merge_rule: ExportConfig's (DEFAULT_MERGE_RULE, uem.train.config, says why), or what the bundle records
    graph = build_prototype_graph(aligned, k=k_prototypes, seed=proto_seed, rule=merge_rule, merge=merge)
    calibration = fit_calibration(open_set, FitInputs(aligned, to_target=alignment.to_target, seed=seed,
                                                      alpha=open_set_alpha, csls_k=align.csls_k, probes=wild))
    return alignment, align_log, graph, calibration
