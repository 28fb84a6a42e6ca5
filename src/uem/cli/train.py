"""`uemctl train DATA -o RUN` — unsupervised training (mined cross-domain pairs by default; UEM's
stage 1 IDSE and stage 2 CDSM with --epochs-idse / --epochs-cdsm)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..engine.errors import UemError
from ..train.config import DEFAULT_MERGE_RULE, DEVICES, MERGE_RULES
from .root import app, err


@app.command("train")
def train_cmd(
    data: Path = typer.Argument(..., help="DATA/<domain>/**/<image>, 2 or more domains; sub-folders are not read as labels."),
    out: Path = typer.Option(..., "-o", "--out", help="Run directory (config.json, encoder.pt, checkpoint, log, plots)."),
    epochs_idse: int = typer.Option(None, "--epochs-idse", help="UEM stage 1 (IDSE) epochs (default 0)."),
    epochs_cdsm: int = typer.Option(None, "--epochs-cdsm", help="UEM stage 2 (CDSM) epochs (default 0)."),
    epochs1: int = typer.Option(None, "--epochs1", hidden=True),  # older names of the two above
    epochs2: int = typer.Option(None, "--epochs2", hidden=True),
    epochs_pairs: int = typer.Option(None, "--epochs-pairs", help="Mined-pair stage epochs (default 4; runs after IDSE/CDSM)."),
    head: str = typer.Option(None, "--head", help="Read-out: grid (default), linear, mlp."),
    grid: int = typer.Option(None, "--grid", help="Grid head: cells per side of the trunk's output map."),
    place_p: float = typer.Option(None, "--place-p", help="Share of augmented views placed on a backdrop at "
                                  "another scale and position, then framed (default 0.5; 0: crops only)."),
    place_photos: bool = typer.Option(False, "--place-photos", help="Placed views also on photo textures "
                                      "(scikit-image sample pictures, tinted)."),
    framing: str = typer.Option(None, "--framing", help="content (default): crop each picture to what is drawn, "
                                "plain backdrop to white; letterbox: the whole canvas."),
    seed: int = typer.Option(None, "--seed"),
    embed_dim: int = typer.Option(None, "--embed-dim", help="Embedding size."),
    input_size: int = typer.Option(None, "--input-size", help="Square input side (multiple of 32)."),
    batch_size: int = typer.Option(None, "--batch-size"),
    freeze_blocks: int = typer.Option(None, "--freeze-blocks", help="MBConv blocks kept frozen (and cached), 0-16."),
    views: int = typer.Option(None, "--views", help="Augmented views cached per image."),
    lr: float = typer.Option(None, "--lr", help="IDSE/CDSM learning rate of the head (backbone blocks: lr * backbone_lr_mult)."),
    pairs_lr: float = typer.Option(None, "--pairs-lr", help="Mined-pair stage learning rate (AdamW)."),
    device: str = typer.Option("auto", "--device", help=" | ".join(DEVICES)),
    merge_rule: str = typer.Option(DEFAULT_MERGE_RULE, "--merge-rule", help="Which matched prototype pairs "
                                   f"merge: {' or '.join(MERGE_RULES)} (the paper's bar, docs/method.md, is global)."),
    no_merge: bool = typer.Option(False, "--no-merge", help="Ablation: pair prototypes but never merge."),
    no_sel: bool = typer.Option(False, "--no-sel", help="Ablation: no semantic-enhanced loss."),
    no_spda: bool = typer.Option(False, "--no-spda", help="Ablation: no domain classifier and no SPR."),
    plain_nn: bool = typer.Option(True, "--plain-nn/--sn2m", help="Stage-2 positives: plain nearest neighbours "
                                  "(default, measured better) or the paper's SN2M trust switching (docs/method.md)."),
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
    from ..train.config import ModelConfig, TrainConfig
    from ..train.trainer import train

    scan(data)  # a bad DATA fails here with one line, before anything is written
    if place_photos:
        from ..datasets.backdrops import texture_files
        from ..train.placement import TRAIN_TEXTURES

        texture_files(TRAIN_TEXTURES)  # scikit-image's sample pictures: one line now, not after loading the images
    # every option is a TrainConfig or ModelConfig field (unset ones keep the field's default); the
    # configs refuse bad values with one line (ConfigError)
    cfg = TrainConfig(data=str(data.resolve()), device=device, merge_rule=merge_rule, merge=not no_merge,
                      sel=not no_sel, spda=not no_spda, plain_nn=plain_nn, baseline_k=baseline_k,
                      keep_cache=keep_cache, augment=_augment(place_p, place_photos),
                      model=ModelConfig(line_view=not no_line_view, **_given(embed_dim=embed_dim, input_size=input_size,
                                                                          freeze_blocks=freeze_blocks, head=head,
                                                                          grid=grid, framing=framing)),
                      **_given(epochs_idse=older_name(epochs_idse, epochs1, "--epochs-idse", "--epochs1"),
                               epochs_cdsm=older_name(epochs_cdsm, epochs2, "--epochs-cdsm", "--epochs2"),
                               epochs_pairs=epochs_pairs, seed=seed,
                               batch_size=batch_size, views=views, lr=lr, pairs_lr=pairs_lr))
    if nproc < 1 or nproc > cfg.batch_size // 2:
        raise UemError(f"--nproc must be within 1..batch size / 2 ({cfg.batch_size // 2}), got {nproc}")
    if nproc > 1:
        from ..train.launch import launch

        run = launch(cfg, out, nproc, resume=resume, quiet=quiet)
    else:
        run = train(cfg, out, resume=resume, progress=not quiet, console=err)
    from ..train.distributed import is_main_process

    if is_main_process():  # under torchrun, one line, not one per rank
        err.print(f"run written to {run}", markup=False)


def _augment(place_p, place_photos):
    from ..train.augment import AugmentConfig

    try:
        return AugmentConfig(place_photos=place_photos, **_given(place_p=place_p))
    except ValueError as e:  # AugmentConfig refuses bad values with plain ValueErrors
        raise UemError(str(e)) from None


def older_name(value, old_value, flag: str, old_flag: str):
    """An option's value given under its name or the older one it had (kept, hidden, so recorded
    commands still run); both at once must agree."""
    if value is not None and old_value is not None and value != old_value:
        raise UemError(f"{flag} {value} and {old_flag} {old_value} (its older name) disagree")
    return value if value is not None else old_value


def _given(**options):
    """The options the user set (typer's None: not given)."""
    return {k: v for k, v in options.items() if v is not None}
