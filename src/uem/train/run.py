"""A run directory — the contract between `uemctl train` and `uemctl export`.

    RUN/config.json    TrainConfig (the model shape, the data it was trained on, every option;
                       versioned, an older one is migrated on load: uem.train.config)
    RUN/encoder.pt     the encoder's state dict (tensors only; loaded with weights_only=True)
    RUN/...            trainer outputs: checkpoint for resume, log.jsonl, loss.png, prototypes

Export needs only the first two.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..engine.atomic import replacing
from ..engine.errors import UemError
from .config import ConfigError, TrainConfig, write_json
from .model import EncoderNet, build_encoder

CONFIG = "config.json"
ENCODER = "encoder.pt"


class RunError(UemError):
    """A run directory that is missing or incomplete."""


def save_torch_atomic(obj: object, path: Path) -> None:
    """torch.save through a temp file renamed onto `path` (a crash never leaves half a checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as tmp:
        torch.save(obj, tmp)


def save_encoder(run_dir: Path, encoder: EncoderNet, cfg: TrainConfig) -> None:
    run_dir = Path(run_dir)
    write_json(run_dir / CONFIG, cfg.to_dict())
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    save_torch_atomic(state, run_dir / ENCODER)


def load_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir}: not a training run (no {CONFIG})")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise RunError(f"{path}: unreadable config ({e})") from None
    try:
        return TrainConfig.from_dict(d)
    except ConfigError as e:  # a bad value, or a version newer than this code
        raise RunError(f"{path}: {e}") from None


def load_encoder(run_dir: Path) -> tuple[EncoderNet, TrainConfig]:
    """The trained encoder in eval mode, on the CPU."""
    cfg = load_config(run_dir)
    path = Path(run_dir) / ENCODER
    if not path.is_file():
        raise RunError(f"{run_dir}: no {ENCODER} (training did not finish?)")
    encoder = build_encoder(cfg.model, pretrained=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        encoder.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is the same user-facing problem
        raise RunError(f"{path}: cannot load encoder ({e})") from None
    return encoder.eval(), cfg
