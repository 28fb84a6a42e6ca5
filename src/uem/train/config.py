"""Training configuration: self-validating dataclasses, written next to a run's outputs as a
versioned config.json.

Why one module: the CLI, the trainer, export, the demo and the benchmarks all build or read a
TrainConfig. Every default, range and choice lives here once, and so does what the ablation
switches mean (what the UCDIR-style baseline turns off: `TrainConfig.merges`, `TrainConfig.uses_sel`),
so a bad value fails with one line wherever it came from, before anything slow starts, and every
reader agrees on what a recorded config means. The version lets a run written by older code load
with the behaviour it was trained with (`migrate`) and refuses one written by newer code.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from ..engine.atomic import replace_atomic
from ..engine.framing import FRAMINGS
from ..engine.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec
from .augment import AugmentConfig
from .versions import CONFIG_VERSION, RENAMED_FIELDS, ConfigError, ConfigVersionError, migrate  # noqa: F401 (re-exported)

DEVICES = ("auto", "cpu", "cuda")
HEADS = ("grid", "linear", "mlp", "pooled")

# Which Hungarian-matched prototype pairs merge (uem.train.prototypes.pair_and_merge), in training
# and in a bundle's cross-domain links. "global" is docs/method.md's bar: closer than ANY two
# prototypes of one domain; that bar shrinks as K grows, and at the K the estimate picks (~73-93 per
# domain on emoji3) it lets ~10 of ~250 pairs through, so the bundle's open-set rule rejected almost
# every query (H 0.00-0.15). "local" (per pair: closer than either prototype's own nearest
# same-domain neighbour) measured H 0.52-0.59 with the same AUROC (benchmarks/RESULTS-archive.md, "the local
# bar made the bundle's default"). One default for both: a run's training merges what its bundle links.
MERGE_RULES = ("global", "local")
DEFAULT_MERGE_RULE = "local"


class _Problems:
    """Collects every bad value of one config, so a user sees them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def number(self, name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
               integer: bool = False, lo_open: bool = False, hi_open: bool = False) -> None:
        """value is a finite int (or, unless `integer`, float) within the bounds (closed unless *_open)."""
        ok = (isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
              and math.isfinite(value))
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if hi_open else value <= hi
        if ok:
            return
        if lo is not None and hi is not None:
            bounds = f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        elif lo is not None:
            bounds = f" {'>' if lo_open else '>='} {lo}"
        else:
            bounds = ""
        self.items.append(f"{name} must be {'an integer' if integer else 'a number'}{bounds}, got {value!r}")

    def choice(self, name: str, value: Any, choices: tuple[str, ...]) -> None:
        if value not in choices:
            self.items.append(f"{name} must be one of {', '.join(choices)}, not {value!r}")

    def flag(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.items.append(f"{name} must be true or false, got {value!r}")

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.items.append(message)

    def raise_any(self) -> None:
        if self.items:
            raise ConfigError("; ".join(self.items))


@dataclass
class ModelConfig:
    """EncoderNet's shape: EfficientNet-Lite0 trunk + projection head to an L2-normalised embedding."""

    input_size: int = 128
    embed_dim: int = 512             # with line_view: two halves of embed_dim / 2
    # Look at each picture also as a line drawing of itself (uem.train.model.LineArtView), through
    # the same weights; the embedding is both views' halves side by side.
    line_view: bool = True
    # "linear": one Linear layer started from the PCA of the pooled ImageNet features (the embedding
    # starts as good as the backbone under it); "mlp": Linear-BN-ReLU-Linear from random weights
    # (SimCLR-style; measured to halve the floor's identity accuracy at the start, RESULTS-archive.md).
    # "pooled": no head, the embedding is each view's pooled trunk output (`uemctl export --pretrained`).
    # "grid" (default): the trunk's output map itself, average-pooled to grid x grid cells and
    # flattened, so the embedding keeps WHERE the parts of a picture are; one Linear layer started
    # at its PCA. At 128 px the block-13 map is 4 x 4 and grid 4 keeps all of it: untrained, its
    # 512-d PCA reads 0.439 mean top-1 identity on emoji3 against 0.342 for the pooled read-out
    # (benchmarks/RESULTS.md, "Training that learns").
    head: str = "grid"
    head_hidden: int = 512           # "mlp" only
    grid: int = 4                    # "grid" only: cells per side (the map side must be a multiple)
    # Blocks [0, freeze_blocks) of the 16 MBConv blocks (plus the stem) stay at their ImageNet weights.
    freeze_blocks: int = 14
    # How a picture is framed before the letter-box (uem.engine.framing): "content" crops it to what
    # is drawn and paints a plain backdrop white, so a user's off-centre or coloured-backdrop picture
    # is seen like the centred icons; "letterbox" keeps the whole canvas (runs before config v3).
    framing: str = "content"

    def __post_init__(self) -> None:
        p = _Problems()
        self._check(p)
        p.raise_any()

    def _check(self, p: _Problems) -> None:
        p.number("input_size", self.input_size, 32, integer=True)
        p.number("embed_dim", self.embed_dim, 2, integer=True)
        p.flag("line_view", self.line_view)
        p.choice("head", self.head, HEADS)
        p.choice("framing", self.framing, FRAMINGS)
        p.number("head_hidden", self.head_hidden, 1, integer=True)
        p.number("freeze_blocks", self.freeze_blocks, 0, 16, integer=True)
        p.number("grid", self.grid, 1, integer=True)
        if self.head == "grid" and isinstance(self.input_size, int) and self.input_size % 32:
            p.items.append(f"input_size must be a multiple of 32 for the grid head, got {self.input_size}")
        elif self.head == "grid" and isinstance(self.grid, int) and isinstance(self.input_size, int) \
                and isinstance(self.freeze_blocks, int) and 0 <= self.freeze_blocks <= 16:
            side = self.map_side()
            p.check(side % self.grid == 0 if self.grid >= 1 else True,
                    f"grid must divide the trunk's {side} x {side} output map at input_size "
                    f"{self.input_size}, got {self.grid}")
        if self.line_view is True and isinstance(self.embed_dim, int) and self.embed_dim % 2:
            p.items.append(f"embed_dim must be even with the line-art view (two halves), got {self.embed_dim}")

    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(size=self.input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                              framing=self.framing)

    def map_side(self) -> int:
        """Side of the trunk's output map: input_size over the stride of blocks [0, freeze_blocks).
        Exact for input sizes that are multiples of 32 (what every trained head takes; a test pins
        it against the network)."""
        stride = 2  # the stem
        for block in range(min(self.freeze_blocks, 16)):
            if block in (1, 3, 5, 11):  # the first block of each stride-2 stage (LITE0_STAGES)
                stride *= 2
        return max(1, -(-self.input_size // stride))


@dataclass
class TrainConfig:
    """Everything a run needs to be reproduced. Training-specific fields are added by the trainer."""

    data: str = ""
    domains: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 2024

    # -- schedule: the stages run in the order of STAGES, each for its epochs (0: skipped) ---------
    # docs/method.md's IDSE then CDSM are off by default: at the grid read-out neither lifted top-1
    # identity over the mined-pair stage alone (benchmarks/RESULTS.md, "Training that learns").
    epochs_idse: int = 0             # stage 1, IDSE (UEM: instance + prototype contrast, SEL)
    epochs_cdsm: int = 0             # stage 2, CDSM (UEM: SN2M / plain NN, SPDA)
    epochs_pairs: int = 4            # stage 3, mined pairs (uem.train.stages.PairStage)
    batch_size: int = 128
    # IDSE/CDSM: SGD momentum 0.9, cosine to 0 within each stage (head lr). 0.03 suited the linear
    # head on the 1280-d features; at the grid head (unit cells under a PCA layer) 0.03 diverges
    # within a few steps and 0.003 trains (tests/test_train.py, the fixed-batch test).
    lr: float = 0.003
    backbone_lr_mult: float = 0.3    # the trainable backbone blocks learn at lr * this
    momentum: float = 0.9
    weight_decay: float = 5e-4
    tau: float = 0.07
    bank_momentum: float = 0.5       # paper 0.99 over 100-200 epochs; a few epochs need a faster bank
    # -- the mined-pair stage (uem.train.stages.PairStage): cross-domain positives are mutual
    #    nearest neighbours under CSLS after per-domain whitening, re-mined every epoch ------------
    pairs_lr: float = 1e-3           # AdamW, cosine to 0 over the stage
    pairs_tau: float = 0.05
    # the augmented view against its own clean embedding: 0 by default. At 0.3 top-1 identity was the
    # same and category mAP lower on both sets (emoji3 0.220 vs 0.229, 3 seeds, int8;
    # benchmarks/RESULTS.md, "Training that learns"); the mined pairs alone keep the space spread.
    pairs_instance_weight: float = 0.0
    pairs_k: int = 10                # CSLS neighbourhood
    align_shrinkage: float = 5.0     # the whitening's shrinkage: export's default (uem.export.align)
    device: str = "auto"             # auto | cpu | cuda

    # -- the frozen trunk's cache: view 0 = the clean image, plus `views` augmented views ---------
    views: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    keep_cache: bool = False         # keep RUN/trunk_cache.pt after a finished run

    # -- prototypes -----------------------------------------------------------------------------
    k_min: int = 16                  # range searched by the K estimate (never the true count)
    k_max: int = 256
    merge_rule: str = DEFAULT_MERGE_RULE

    # -- switches for ablations -----------------------------------------------------------------
    merge: bool = True               # --no-merge: pair prototypes but merge nothing
    sel: bool = True                 # --no-sel: no semantic-enhanced loss
    spda: bool = True                # --no-spda: no domain classifier and no SPR in stage 2
    plain_nn: bool = True            # stage-2 positives: plain nearest neighbours (measured ahead of SN2M on
                                     # top-1 identity, benchmarks/RESULTS-archive.md); --sn2m: docs/method.md's SN2M
    baseline_k: int | None = None    # the UCDIR-style baseline (see `baseline`)

    def __post_init__(self) -> None:
        p = _Problems()
        p.check(isinstance(self.data, str), f"data must be a folder path (a string), got {self.data!r}")
        p.check(isinstance(self.domains, list) and all(isinstance(d, str) for d in self.domains),
                f"domains must be a list of names, got {self.domains!r}")
        p.check(isinstance(self.model, ModelConfig), "model must be a ModelConfig")
        p.check(isinstance(self.augment, AugmentConfig), "augment must be an AugmentConfig")
        p.number("seed", self.seed, 0, integer=True)
        p.number("epochs_idse", self.epochs_idse, 0, integer=True)
        p.number("epochs_cdsm", self.epochs_cdsm, 0, integer=True)
        p.number("epochs_pairs", self.epochs_pairs, 0, integer=True)
        p.number("pairs_lr", self.pairs_lr, 0, lo_open=True)
        p.number("pairs_tau", self.pairs_tau, 0, lo_open=True)
        p.number("pairs_instance_weight", self.pairs_instance_weight, 0)
        p.number("pairs_k", self.pairs_k, 1, integer=True)
        p.number("align_shrinkage", self.align_shrinkage, 0, 1e4, lo_open=True)
        p.number("batch_size", self.batch_size, 2, integer=True)
        p.number("lr", self.lr, 0, lo_open=True)
        p.number("backbone_lr_mult", self.backbone_lr_mult, 0)
        p.number("momentum", self.momentum, 0, 1, hi_open=True)
        p.number("weight_decay", self.weight_decay, 0)
        p.number("tau", self.tau, 0, lo_open=True)
        p.number("bank_momentum", self.bank_momentum, 0, 1, hi_open=True)
        p.choice("device", self.device, DEVICES)
        p.number("views", self.views, 0, integer=True)
        p.number("k_min", self.k_min, 1, integer=True)
        p.number("k_max", self.k_max, 1, integer=True)
        if isinstance(self.k_min, int) and isinstance(self.k_max, int):
            p.check(self.k_min <= self.k_max, f"k_min ({self.k_min}) must not exceed k_max ({self.k_max})")
        p.choice("merge_rule", self.merge_rule, MERGE_RULES)
        for name in ("keep_cache", "merge", "sel", "spda", "plain_nn"):
            p.flag(name, getattr(self, name))
        if self.baseline_k is not None:
            p.number("baseline_k", self.baseline_k, 1, integer=True)
        # a trained run's input side is a multiple of 32, the trunk's total stride (what `uemctl train`
        # has always asked for); the pooled read-out of `uemctl export --pretrained` takes any size >= 32
        if isinstance(self.model, ModelConfig) and self.model.head == "pooled":
            p.check(self.epochs_idse == self.epochs_cdsm == self.epochs_pairs == 0 or not all(
                isinstance(e, int) for e in (self.epochs_idse, self.epochs_cdsm, self.epochs_pairs)),
                    "the pooled read-out has nothing to train: its epochs must be 0")
        if isinstance(self.model, ModelConfig) and self.model.head != "pooled":
            p.check(self.model.input_size % 32 == 0,
                    f"input_size must be a multiple of 32 for a trained head, got {self.model.input_size}")
        p.raise_any()

    # -- what the switches mean, written once ------------------------------------------------------
    @property
    def baseline(self) -> bool:
        """The UCDIR-style baseline: K fixed at `baseline_k` for every domain and epoch, no merging
        of cross-domain prototype pairs, no semantic-enhanced loss (`merges`, `uses_sel`)."""
        return self.baseline_k is not None

    @property
    def merges(self) -> bool:
        """Whether matched prototype pairs may merge (in training and in the bundle's links): not
        with --no-merge, and never in the baseline."""
        return self.merge and not self.baseline

    @property
    def uses_sel(self) -> bool:
        """Whether stage 1 adds the semantic-enhanced loss: not with --no-sel, never in the baseline."""
        return self.sel and not self.baseline

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": CONFIG_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """A config.json's contents (any version this code knows, migrated) -> a validated
        TrainConfig. Unknown keys are ignored; a newer version is a ConfigVersionError."""
        current = migrate(d)
        current.pop("version")
        return _build(cls, current)

    def with_changes(self, changes: Mapping[str, Any]) -> "TrainConfig":
        """A validated copy with `changes` applied: keys are field names, or "model.<field>" and
        "augment.<field>" for the parts, or a field's older name (RENAMED_FIELDS). An unknown key is
        a ConfigError."""
        base = copy.deepcopy(self)
        top: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {"model": {}, "augment": {}}
        for key, value in changes.items():
            key = RENAMED_FIELDS.get(key, key)
            part, dot, name = key.partition(".")
            if dot and part in parts and name in _names(getattr(base, part)):
                parts[part][name] = value
            elif not dot and key in _names(base):
                top[key] = value
            else:
                raise ConfigError(f"unknown setting {key!r}")
        for part, values in parts.items():
            if values:
                top[part] = _validated(replace, top.get(part, getattr(base, part)), **values)
        return _validated(replace, base, **top)


def _names(obj: Any) -> set[str]:
    return {f.name for f in fields(obj)}


def _build(cls: type, d: Mapping[str, Any]) -> Any:
    """Rebuild nested dataclasses from a current-layout dict; unknown keys are ignored."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{cls.__name__} must be a JSON object, not {type(d).__name__}")
    kwargs = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        value = d[f.name]
        ftype = f.type if not isinstance(f.type, str) else _resolve(cls, f.name)
        if is_dataclass(ftype) and isinstance(value, Mapping):
            value = _build(ftype, value)
        kwargs[f.name] = value
    return _validated(cls, **kwargs)


def _validated(make: Any, *args: Any, **kwargs: Any) -> Any:
    """make(*args, **kwargs), every refusal as a ConfigError (AugmentConfig raises ValueError; an
    unexpected keyword or a missing one is a TypeError)."""
    try:
        return make(*args, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _resolve(cls: type, name: str) -> Any:
    import typing

    return typing.get_type_hints(cls)[name]


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (temp file + fsync + rename): a crash never leaves half a config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
