"""Configuration as plain dataclasses with defaults; written next to a run's outputs as config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..engine.atomic import replace_atomic
from ..engine.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from .augment import AugmentConfig


@dataclass
class ModelConfig:
    """Encoder shape: EfficientNet-Lite0 trunk + projection head to an L2-normalised embedding."""

    input_size: int = 128
    embed_dim: int = 128             # with line_view: two halves of embed_dim / 2
    # Look at each picture also as a line drawing of itself (uem.train.model.LineArtView), through
    # the same weights; the embedding is both views' halves side by side.
    line_view: bool = True
    # "linear": one Linear layer started from the PCA of the pooled ImageNet features (the embedding
    # starts as good as the backbone under it); "mlp": Linear-BN-ReLU-Linear from random weights
    # (SimCLR-style; measured to halve the floor's identity accuracy at the start, RESULTS.md).
    # "pooled": no head, the embedding is each view's pooled trunk output (`uemctl export --pretrained`).
    head: str = "linear"
    head_hidden: int = 512           # "mlp" only
    # Blocks [0, freeze_blocks) of the 16 MBConv blocks (plus the stem) stay at their ImageNet weights.
    freeze_blocks: int = 14

    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(size=self.input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass
class TrainConfig:
    """Everything a run needs to be reproduced. Training-specific fields are added by the trainer."""

    data: str = ""
    domains: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 2024

    # -- schedule (UEM-METHOD.md: IDSE then CDSM; far fewer epochs than the paper on a CPU) --------
    epochs1: int = 4                 # stage 1, IDSE
    epochs2: int = 2                 # stage 2, CDSM
    batch_size: int = 64
    lr: float = 0.03                 # SGD momentum 0.9, cosine to 0 within each stage (head lr)
    backbone_lr_mult: float = 0.3    # the trainable backbone blocks learn at lr * this
    momentum: float = 0.9
    weight_decay: float = 5e-4
    tau: float = 0.07
    bank_momentum: float = 0.5       # paper 0.99 over 100-200 epochs; a few epochs need a faster bank
    device: str = "auto"             # auto | cpu | cuda

    # -- the frozen trunk's cache: view 0 = the clean image, plus `views` augmented views ---------
    views: int = 3
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    keep_cache: bool = False         # keep RUN/trunk_cache.pt after a finished run

    # -- prototypes -----------------------------------------------------------------------------
    k_min: int = 16                  # range searched by the K estimate (never the true count)
    k_max: int = 256
    merge_rule: str = "global"

    # -- switches for ablations -----------------------------------------------------------------
    merge: bool = True               # --no-merge: pair prototypes but merge nothing
    sel: bool = True                 # --no-sel: no semantic-enhanced loss
    spda: bool = True                # --no-spda: no domain classifier and no SPR in stage 2
    plain_nn: bool = True            # stage-2 positives: plain nearest neighbours (measured ahead of SN2M on
                                     # top-1 identity, benchmarks/RESULTS.md); --sn2m: UEM-METHOD.md's SN2M
    baseline_k: int | None = None    # UCDIR-style baseline: this fixed K, no merge, no SEL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, d)


# Fields added after runs were written with their old behaviour: a config without the key means this.
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"ModelConfig": {"head": "mlp", "line_view": False},
                                               "TrainConfig": {"plain_nn": False}}


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild nested dataclasses; unknown keys are ignored so old configs still load."""
    d = {**LEGACY_DEFAULTS.get(cls.__name__, {}), **d}
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        ftype = f.type if not isinstance(f.type, str) else _resolve(cls, f.name)
        if is_dataclass(ftype) and isinstance(value, dict):
            value = _from_dict(ftype, value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _resolve(cls: type, name: str) -> Any:
    import typing

    return typing.get_type_hints(cls)[name]


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (temp file + fsync + rename): a crash never leaves half a config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
