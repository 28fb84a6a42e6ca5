"""`uemctl train DATA -o RUN` — unsupervised UEM training (stage 1 IDSE, stage 2 CDSM)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..engine.errors import UemError
from .root import app, err


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="DATA/<domain>/**/<image>, 2 or more domains; sub-folders are not read as labels."),
    out: Path = typer.Option(..., "-o", "--out", help="Run directory (config.json, encoder.pt, checkpoint, log, plots)."),
    epochs1: int = typer.Option(None, "--epochs1", help="Stage 1 (IDSE) epochs."),
    epochs2: int = typer.Option(None, "--epochs2", help="Stage 2 (CDSM) epochs."),
    seed: int = typer.Option(None, "--seed"),
    embed_dim: int = typer.Option(None, "--embed-dim", help="Embedding size."),
    input_size: int = typer.Option(None, "--input-size", help="Square input side (multiple of 32)."),
    batch_size: int = typer.Option(None, "--batch-size"),
    freeze_blocks: int = typer.Option(None, "--freeze-blocks", help="MBConv blocks kept frozen (and cached), 0-16."),
    views: int = typer.Option(None, "--views", help="Augmented views cached per image."),
    lr: float = typer.Option(None, "--lr", help="Learning rate of the head (backbone blocks: lr * backbone_lr_mult)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    no_merge: bool = typer.Option(False, "--no-merge", help="Ablation: pair prototypes but never merge."),
    no_sel: bool = typer.Option(False, "--no-sel", help="Ablation: no semantic-enhanced loss."),
    no_spda: bool = typer.Option(False, "--no-spda", help="Ablation: no domain classifier and no SPR."),
    plain_nn: bool = typer.Option(True, "--plain-nn/--sn2m", help="Stage-2 positives: plain nearest neighbours "
                                  "(default, measured better) or UEM-METHOD.md's SN2M trust switching."),
    baseline_k: Optional[int] = typer.Option(None, "--baseline-k", help="UCDIR-style baseline: this fixed K, no merge, no SEL."),
    no_line_view: bool = typer.Option(False, "--no-line-view", help="Ablation: no line-art view of each picture."),
    keep_cache: bool = typer.Option(False, "--keep-cache", help="Keep RUN/trunk_cache.pt after the run."),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN from its last checkpoint (its config wins)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    nproc: int = typer.Option(1, "--nproc", help="Processes on this machine (torchrun + DDP; gloo on CPU, "
                              "nccl with one GPU each). The batch size stays the global batch."),
) -> None:
    """Train the encoder on DATA without labels and write the run to RUN."""
    from ..datasets.folders import scan
    from ..train.config import TrainConfig
    from ..train.trainer import train

    scan(data)  # a bad DATA fails here with one line, before anything is written
    if device not in ("auto", "cpu", "cuda"):
        raise UemError(f"--device must be auto, cpu or cuda, not {device!r}")
    cfg = TrainConfig(data=str(data.resolve()), device=device, merge=not no_merge, sel=not no_sel,
                      spda=not no_spda, plain_nn=plain_nn, baseline_k=baseline_k, keep_cache=keep_cache)
    for name, value in (("epochs1", epochs1), ("epochs2", epochs2), ("seed", seed), ("batch_size", batch_size),
                        ("views", views), ("lr", lr)):
        if value is not None:
            setattr(cfg, name, value)
    cfg.model.line_view = not no_line_view
    for name, value in (("embed_dim", embed_dim), ("input_size", input_size), ("freeze_blocks", freeze_blocks)):
        if value is not None:
            setattr(cfg.model, name, value)
    problems = []
    if cfg.model.input_size < 32 or cfg.model.input_size % 32:
        problems.append(f"--input-size must be a multiple of 32 and >= 32, got {cfg.model.input_size}")
    if not 0 <= cfg.model.freeze_blocks <= 16:
        problems.append("--freeze-blocks must be within 0..16")
    if cfg.epochs1 < 0 or cfg.epochs2 < 0 or cfg.batch_size < 2 or cfg.views < 0 or cfg.model.embed_dim < 2:
        problems.append("epochs and views must be >= 0, batch size and embedding size >= 2")
    if cfg.model.line_view and cfg.model.embed_dim % 2:
        problems.append(f"--embed-dim must be even with the line-art view (two halves), got {cfg.model.embed_dim}")
    if baseline_k is not None and baseline_k < 1:
        problems.append("--baseline-k must be >= 1")
    if nproc < 1 or nproc > cfg.batch_size // 2:
        problems.append(f"--nproc must be within 1..batch size / 2 ({cfg.batch_size // 2}), got {nproc}")
    if problems:
        raise UemError("; ".join(problems))
    if nproc > 1:
        from ..train.launch import launch

        run = launch(cfg, out, nproc, resume=resume, quiet=quiet)
    else:
        run = train(cfg, out, resume=resume, progress=not quiet, console=err)
    from ..train.distributed import is_main_process

    if is_main_process():  # under torchrun, one line, not one per rank
        err.print(f"run written to {run}", markup=False)
