"""What a bundle derives from its raw vectors without labels: alignment, prototypes, open-set calibration.

Why a module of its own: `uemctl export` and `uemctl index realign` both call it, and realign never
runs a network, so this must not import torch, onnx or onnxruntime (the export pipeline does).
"""

from __future__ import annotations

import numpy as np

from ..engine.openset import ALPHA
from .align import AlignConfig, fit_alignment
from .openset import anchored_calibration, contrast_calibration


def fit_readout(vectors: dict[str, np.ndarray], align: AlignConfig, *, merge_rule: str, open_set: str,
                merge: bool, k_prototypes: int | None, proto_seed: int, seed: int,
                open_set_alpha: float = ALPHA, probes: dict[str, np.ndarray] | None = None,
                probe_rows: dict[str, np.ndarray] | None = None):
    """Everything a bundle derives from its raw vectors without labels: the alignment (and its
    log), the prototype graph and the open-set calibration, both on the aligned vectors (where the
    engine compares a query with them). `probes`: raw embeddings of wild copies of some items and
    their rows (export/probes.py), kept in the alignment and used by the anchored calibration.
    Shared by export and `uemctl index realign`."""
    from ..train.prototypes import build_prototype_graph

    alignment, align_log = fit_alignment(vectors, align, seed=seed, probes=probes, probe_rows=probe_rows)
    aligned = {d: alignment.align(v, d) for d, v in vectors.items()}
    wild = {d: (alignment.probe_rows[d], alignment.align(p, d)) for d, p in alignment.probes.items()}
    # merge_rule: ExportConfig's (DEFAULT_MERGE_RULE, uem.train.config, says why), or what the bundle records
    graph = build_prototype_graph(aligned, k=k_prototypes, seed=proto_seed, rule=merge_rule, merge=merge)
    calibration = {"rule": open_set}
    if open_set == "anchored":
        calibration["anchored"] = anchored_calibration(aligned, alpha=open_set_alpha, seed=seed,
                                                       to_target=alignment.to_target,
                                                       csls_k=max(align.csls_k, 1), probes=wild)
    elif open_set == "contrast":
        calibration["contrast"] = contrast_calibration(aligned, seed=seed, to_target=alignment.to_target)
    return alignment, align_log, graph, calibration
