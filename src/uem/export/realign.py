"""`uemctl index realign`: refit a bundle's alignment from the vectors it stores, without re-embedding.

Why it exists: `index add` aligns new items with the transform fitted at export and never refits
it, so a domain that grew a lot (or changed what it shows) drifts from its mean and covariance;
and choosing another alignment (`--align`, `--shrinkage`, maps, CSLS) should not cost an export.
Realigning refits everything `fit_from_vectors` derives from the raw vectors — alignment, prototypes,
open-set thresholds — rebuilds the indexes over the newly aligned vectors and commits it all as one
new generation (atomic, like any write). The encoder and the raw vectors are kept byte for byte.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..engine.bundle import DEFAULT_LOCK_TIMEOUT_S, DomainData, read_bundle, write_bundle
from ..engine.errors import BundleError
from ..engine.openset import ALPHA, rule_name
from ..train.config import ConfigError, TrainConfig
from .align import NO_ALIGNMENT, AlignConfig
from .fit import fit_from_vectors

# What export did before the manifest recorded its rules: bundles without "merge_rule" were linked
# with docs/method.md's global bar. The open-set rule is read from the calibration, as the engine reads
# it (uem.engine.openset.rule_name: contrast when it holds contrast thresholds, else prototype).
UNRECORDED_MERGE_RULE = "global"


def recorded_config(info) -> AlignConfig:
    """The AlignConfig the bundle was exported (or last realigned) with; the defaults for a bundle
    that records none, and "no alignment" for one written before alignment existed."""
    from dataclasses import fields

    if not info.manifest.get("alignment"):
        return NO_ALIGNMENT
    rec = ((info.extra.get("alignment") or {}).get("config")) or {}
    known = {f.name for f in fields(AlignConfig)}
    return AlignConfig(**{k: v for k, v in rec.items() if k in known})


def realign_bundle(path: str | Path, align: AlignConfig | None = None, *, changes: dict | None = None,
                   seed: int = 0, k_prototypes: int | None = None,
                   lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> dict:
    """Refit and commit; returns {"seconds", "alignment", "prototypes", "links"}. `align`: the
    alignment to fit; default the bundle's own recorded one with `changes` (AlignConfig fields)
    applied. The open-set rule and merge rule stay those the bundle was exported with."""
    t0 = time.perf_counter()
    info = read_bundle(path)
    if align is None:
        base = recorded_config(info).to_dict()
        base.update(changes or {})
        base["csls_candidates"] = max(base["csls_candidates"], base["csls_k"], 1)
        align = AlignConfig(**base)
    extra = dict(info.extra)
    merge_rule = str(extra.get("merge_rule", UNRECORDED_MERGE_RULE))
    open_set = rule_name(info.calibration)
    merge, proto_seed = True, 0  # a bundle that records no training config
    if extra.get("train_config"):
        try:
            train = TrainConfig.from_dict(extra["train_config"])
        except ConfigError as e:
            raise BundleError(f"{info.root}: the training config it records: {e}") from None
        merge, proto_seed = train.merges, train.seed
    if info.backend:
        raise BundleError(f"{info.root}: served from {info.backend.get('kind')}; move it back with "
                          "`uemctl index move --to hnswlib`, realign, then move it again")
    vectors = {d: info.load_vectors(d, mmap=False) for d in info.domains}
    record = info.calibration.get(open_set)  # a rule that has an alpha keeps the one it was fitted with
    alpha = float(record.get("alpha", ALPHA)) if isinstance(record, dict) else ALPHA
    alignment, align_log, graph, calibration = fit_from_vectors(
        vectors, align, merge_rule=merge_rule, open_set=open_set, merge=merge, k_prototypes=k_prototypes,
        proto_seed=proto_seed, seed=seed, open_set_alpha=alpha,
        probes=info.alignment.probes, probe_rows=info.alignment.probe_rows)
    extra["alignment"] = align_log
    extra["realigned_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_bundle(info.root, encoder_onnx=info.encoder.path,
                 encoder_fp32_onnx=info.encoder_fp32.path if info.encoder_fp32 else None,
                 preprocess=info.preprocess, embed_dim=info.embed_dim,
                 domains=[DomainData(d, vectors[d], list(info.domains[d].items)) for d in info.domains],
                 prototypes=graph, hnsw=info.hnsw, calibration=calibration, extra=extra,
                 lock_timeout=lock_timeout, alignment=alignment, expect_generation=info.generation)
    return {"seconds": round(time.perf_counter() - t0, 1), "alignment": alignment.describe(),
            "prototypes": int(len(graph.centroids)), "links": int(len(graph.links))}
