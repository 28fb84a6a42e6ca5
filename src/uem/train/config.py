"""Configuration as plain dataclasses with defaults; written next to a run's outputs as config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ..engine.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec


@dataclass
class ModelConfig:
    """Encoder shape: EfficientNet-Lite0 trunk + projection head to an L2-normalised embedding."""

    input_size: int = 128
    embed_dim: int = 128
    head_hidden: int = 512
    # Blocks [0, freeze_blocks) of the 16 MBConv blocks (plus the stem) stay at their ImageNet weights.
    freeze_blocks: int = 9

    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(size=self.input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass
class TrainConfig:
    """Everything a run needs to be reproduced. Training-specific fields are added by the trainer."""

    data: str = ""
    domains: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    seed: int = 2024

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, d)


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild nested dataclasses; unknown keys are ignored so old configs still load."""
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
    """Atomic JSON write (temp file + fsync + rename)."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
