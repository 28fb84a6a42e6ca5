"""A run directory — the contract between `uemctl train` and `uemctl export`.

    RUN/config.json    TrainConfig (the model shape, the data it was trained on, every option)
    RUN/encoder.pt     the encoder's state dict (tensors only; loaded with weights_only=True)
    RUN/...            trainer outputs: checkpoint for resume, log.jsonl, loss.png, prototypes

Export needs only the first two; `init_run` writes a pretrained-only run (no training), which is the
floor and what tests and development use.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..datasets.folders import scan
from ..engine.atomic import replacing
from ..engine.errors import UemError
from .config import TrainConfig, write_json
from .model import Encoder, build_encoder

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


def save_encoder(run_dir: Path, encoder: Encoder, cfg: TrainConfig) -> None:
    run_dir = Path(run_dir)
    write_json(run_dir / CONFIG, cfg.to_dict())
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    save_torch_atomic(state, run_dir / ENCODER)


def load_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise RunError(f"{run_dir}: not a training run (no {CONFIG})")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:
        raise RunError(f"{path}: unreadable config ({e})") from None


def load_encoder(run_dir: Path) -> tuple[Encoder, TrainConfig]:
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


def init_run(data: Path, out: Path, cfg: TrainConfig | None = None) -> Path:
    """A run with the ImageNet backbone and a randomly initialised (seeded) head: no training."""
    cfg = cfg or TrainConfig()
    cfg.data = str(Path(data).resolve())
    cfg.domains = cfg.domains or list(scan(data))
    torch.manual_seed(cfg.seed)
    encoder = build_encoder(cfg.model, pretrained=True).eval()
    save_encoder(Path(out), encoder, cfg)
    return Path(out)
