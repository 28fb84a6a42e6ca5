"""`ExportConfig`: every setting of one export, validated where it is built.

Why a dataclass: `uemctl export`, the demo, the benchmarks and the tests all export, and the
settings used to travel as some twenty loose parameters through three functions. One object that
validates itself refuses a bad value with one line before the slow part starts, keeps each default
(and its reason) in one place, and lets the CLI map its options onto fields. Importing this module
is cheap (no torch, no onnx): the CLI reads its defaults at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.bundle import DOMAIN_NAME, HnswParams
from ..engine.openset import ALPHA, DEFAULT_RULE, RULES
from ..train.config import DEFAULT_MERGE_RULE, MERGE_RULES, ConfigError
from .align import AlignConfig

if TYPE_CHECKING:
    from .quantize import QuantConfig

# "anchored" (default): the closest target item against confident matches, "contrast": the
# neighbourhood-contrast rule, both fitted at export by their own `Rule.fit`; "prototype":
# docs/method.md's rule on the prototype graph alone. The rules and their registry (a name ->
# class dict, so a rule registered there is a valid choice here): uem.engine.openset.
OPEN_SET_RULES = RULES

# hnswlib for unit vectors, 1k to ~1M items per domain. M=32 (2*M links at level 0, ~256 B per
# item): on 100k random unit 128-d vectors, the structure-free worst case, it reached recall@10 0.62
# at ef=128 where M=16 reached 0.37 (benchmarks/RESULTS-archive.md, "Export parity and int8"; measured when the embedding was 128-d,
# the default is now 512-d and was not re-measured at 1M). ef_construction=200 is the usual
# quality/time point; ef_search=128 is a starting point that the 1M index benchmark should confirm
# on embedding-like data (the engine may raise it per query).
DEFAULT_HNSW = HnswParams(M=32, ef_construction=200, ef_search=128, space="ip")
# The bundle's default embedding width. The grid model trains 512-d; projected to 256-d at export
# its bundles answer as well (emoji3 top-1 0.450 vs 0.456 seed 0, category mAP 0.245 vs 0.229;
# photo3 P@1 0.522 vs 0.524), accept more wild queries of existing concepts, and hold an item in
# 1.5 KB instead of 2.5 KB of RAM (open 0.50 s instead of 0.72 s at 100k items): benchmarks/RESULTS.md,
# "Performance", "Embedding width".
DEFAULT_DIM = 256
PARITY_PER_DOMAIN = 200   # held-out images per domain compared with torch (torch is the slow one)


def _default_quant() -> "QuantConfig":
    from .quantize import DEFAULT  # onnx and onnxruntime.quantization: only when a config is built

    return DEFAULT


@dataclass(frozen=True)
class ExportConfig:
    """How `export_run` / `export_pretrained` build a bundle (the network itself comes from the run,
    or from the pretrained read-out)."""

    # DOMAIN -> folder to index (`--index`); None: the run's training domains
    index_dirs: dict[str, Path] | None = None
    calib: int = 300                  # int8 calibration images, spread evenly over the training domains
    keep_fp32: bool = False           # also store the fp32 encoder in the bundle
    seed: int = 0                     # the calibration / parity image draw, and the alignment's fit
    quant: QuantConfig = field(default_factory=_default_quant)
    hnsw: HnswParams = DEFAULT_HNSW
    parity_per_domain: int = PARITY_PER_DOMAIN
    k_prototypes: int | None = None   # prototypes per domain; None: estimated from the vectors
    # serve the domains from Milvus (milvus://HOST:PORT, or a Milvus Lite `*.db` path) instead of
    # hnswlib files in the bundle
    to: str | None = None
    merge_rule: str = DEFAULT_MERGE_RULE  # the bundle's cross-domain links (uem.train.config says why)
    open_set: str = DEFAULT_RULE
    # anchored rule: share of confident matches it may refuse (lower: fewer false "no match",
    # fewer true ones too; benchmarks/RESULTS-archive.md, "No match on the aligned space")
    open_set_alpha: float = ALPHA
    align: AlignConfig = field(default_factory=AlignConfig)
    # wild copies per domain embedded for the "no match" calibration (export/probes.py). Off by
    # default: with 256 the rule accepted 0.90 instead of 0.64 of the queries on a background, but
    # found 0.5 % instead of 24 % of the missing concepts (emoji3; phosphor4 likewise), because one
    # threshold cannot tell a far user's picture from a missing concept (benchmarks/RESULTS.md,
    # "Wild queries"). 256 (export/probes.py PROBES_PER_DOMAIN) is the measured setting for who prefers acceptance.
    probes: int = 0
    # embedding width of the bundle, a projection fitted at export (export/reduce.py): None = the
    # default: DEFAULT_DIM for a trained run (the model's width if narrower, or if too few images
    # to fit it), the untrained read-out's own width for --pretrained; 0 = the model's full width;
    # N = exactly N (refused if wider than the model or not enough images to fit it)
    dim: int | None = None
    overwrite: bool = True            # replace an existing bundle at the output path (atomically)

    def __post_init__(self) -> None:
        problems = []
        if self.index_dirs is not None:
            if not isinstance(self.index_dirs, dict) or not all(isinstance(k, str) for k in self.index_dirs):
                problems.append(f"index_dirs must map domain names to folders, got {self.index_dirs!r}")
            else:
                bad = [k for k in self.index_dirs if not DOMAIN_NAME.match(k)]
                if bad:
                    problems.append(f"index_dirs: bad domain name {bad[0]!r} (letters, digits, '.', '_', '-'; max 64)")
                object.__setattr__(self, "index_dirs", {k: Path(v) for k, v in self.index_dirs.items()})
        if not _whole(self.probes, 0):
            problems.append(f"probes must be a whole number >= 0, got {self.probes!r}")
        if self.dim is not None and not (_whole(self.dim, 2) or self.dim == 0):
            problems.append(f"dim must be 0 (the model's width) or a whole number >= 2, got {self.dim!r}")
        if not _whole(self.calib, 1):
            problems.append(f"calib must be at least 1, got {self.calib!r}")
        if not _whole(self.seed, 0):
            problems.append(f"seed must be a whole number >= 0, got {self.seed!r}")
        if not _whole(self.parity_per_domain, 1):
            problems.append(f"parity_per_domain must be at least 1, got {self.parity_per_domain!r}")
        if self.k_prototypes is not None and not _whole(self.k_prototypes, 1):
            problems.append(f"k_prototypes must be at least 1 (or None: estimated), got {self.k_prototypes!r}")
        if self.merge_rule not in MERGE_RULES:
            problems.append(f"merge rule must be one of {', '.join(MERGE_RULES)}, not {self.merge_rule!r}")
        if self.open_set not in OPEN_SET_RULES:
            problems.append(f"open-set rule must be one of {', '.join(OPEN_SET_RULES)}, not {self.open_set!r}")
        if not (isinstance(self.open_set_alpha, (int, float)) and 0.0 < self.open_set_alpha < 1.0):
            problems.append(f"open_set_alpha must be between 0 and 1 (exclusive), got {self.open_set_alpha!r}")
        if not isinstance(self.hnsw, HnswParams):
            problems.append("hnsw must be an HnswParams")
        if not isinstance(self.align, AlignConfig):
            problems.append("align must be an AlignConfig")
        for name in ("keep_fp32", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.to is not None:
            from ..engine.milvus import normalise_uri  # no pymilvus import: only the address's form

            try:
                normalise_uri(self.to)
            except ValueError as e:
                problems.append(f"to: {e}")
        if problems:
            raise ConfigError("; ".join(problems))


def _whole(value: Any, lo: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def bundle_dim(dim: int | None, model_dim: int, default: int | None = DEFAULT_DIM) -> int:
    """The width a bundle of a `model_dim`-d model gets for ExportConfig.dim `dim` (None: `default`,
    or the model's width when that is narrower or there is no default); ValueError for an explicit
    width wider than the model."""
    if dim is None:
        return model_dim if default is None else min(default, model_dim)
    if dim == 0:
        return model_dim
    if dim > model_dim:
        raise ValueError(f"--dim {dim} is wider than the model's {model_dim}-d embedding")
    return dim
