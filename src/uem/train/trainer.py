"""The training loop: a cached frozen trunk, then the run's stages (uem.train.stages), epoch by epoch.

What the defaults (uem.train.config.TrainConfig) train: EfficientNet-Lite0 with blocks 0-13 frozen
at their ImageNet weights; every picture goes through the same weights twice, as itself and as a
line drawing of itself (line_view: the embedding is both views' halves); the head is the grid
read-out (the block-13 map's 4 x 4 cells, flattened) through one linear layer started at its PCA.

Read top to bottom:
  1. images  — every domain's images decoded once (uem.train.data), nothing below a domain read.
  2. cache   — the frozen trunk's float16 outputs for the clean image + `views` (2) augmented views.
  3. head    — a linear head starts at the PCA of the clean images' features under it; the memory
               banks start from the clean embeddings (built only when a UEM stage runs).
  4. epochs  — the stages in order (idse, cdsm, pairs; only those with epochs > 0; by default
               4 epochs of pairs): each epoch the stage sets its targets (prototypes, or mined
               pairs), then one pass over all images in random batches, each image as one of its
               cached augmented views: the stage's loss, one optimiser step, its bank update.
  5. outputs — encoder.pt + config.json (the export contract), checkpoint.pt after every epoch (for
               --resume), log.jsonl, loss.png, prototypes.npy/json (the final PrototypeGraph).

The losses live in uem.train.losses, the stages' wiring in uem.train.stages, the pair mining in
uem.train.pairs and the prototypes in uem.train.prototypes; this file only runs them.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..engine.atomic import replace_files, replacing
from ..engine.prototypes import PrototypeGraph
from . import trunk_cache
from . import distributed
from .cached_embed import embed_cached, head_inputs_cached  # noqa: F401 - also the benchmarks' and tests' entry
from .config import TrainConfig, write_json
from .data import ImageSet, load_images
from .model import EncoderNet, build_encoder, init_linear_head
from .pairs import MinedPairs
from .prototypes import domain_prototypes, graph_from, match_domains
from .run import save_encoder, save_torch_atomic
from .stages import Context, Stage, train_mode
from .stages import build as build_stages

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
LOSS_PNG = "loss.png"


# -- small pieces ----------------------------------------------------------------------------------
def keep_freed_memory() -> None:
    """glibc: serve large tensors from the heap and keep freed memory there (no mmap/munmap per
    tensor). By default every activation above the mmap threshold is a fresh mapping whose pages
    fault in on first touch; measured on the 2-core dev VM: ~130k page faults/s and a third of the
    CPU time in the kernel. Peak RSS stays the same (it is the peak either way). No-op elsewhere."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)   # M_TRIM_THRESHOLD: do not give the heap top back eagerly
        libc.mallopt(-4, 0)         # M_MMAP_MAX: no separate mappings for large blocks
    except (OSError, AttributeError):
        pass


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from ..engine.errors import UemError

        raise UemError("--device cuda: no CUDA device available")
    return torch.device(name)


def set_lr(opt: torch.optim.Optimizer, progress: float) -> float:
    """Cosine from base_lr to 0 over a stage; progress in [0, 1)."""
    scale = 0.5 * (1.0 + math.cos(math.pi * progress))
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * scale
    return opt.param_groups[-1]["lr"]


def save_checkpoint(run_dir: Path, epoch: int, encoder: EncoderNet, stage: Stage, banks: list[torch.Tensor]) -> None:
    """Tensors and plain types only (loaded with weights_only=True). epoch = epochs completed;
    `stage` = the stage that ran it (its optimiser and targets' state). RNG state needs no
    saving: every epoch reseeds from (seed, epoch)."""
    save_torch_atomic({
        "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "stage": stage.name,
        "stage_state": stage.state_dict(),
        "banks": [b.cpu() for b in banks],
    }, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict | None:
    """The last checkpoint, or None. One written before the stages were objects (its optimiser,
    K and stage-2 modules at the top level) reads in the current layout."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "stage_state" not in state:
        state["stage_state"] = {k: state.pop(k, None) for k in ("optimizer", "ks", "frozen", "disc")}
    return state


# -- logging ---------------------------------------------------------------------------------------
class Log:
    """log.jsonl: one line per step; on resume, lines of epochs not covered by the checkpoint go."""

    def __init__(self, path: Path, keep_before_epoch: int):
        self.path = path
        kept = []
        if keep_before_epoch > 0 and path.is_file():
            kept = [ln for ln in path.read_text(encoding="utf-8").splitlines()
                    if ln.strip() and json.loads(ln).get("epoch", 0) < keep_before_epoch]
        path.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
        self.fh = path.open("a", encoding="utf-8")

    def write(self, rec: dict) -> None:
        self.fh.write(json.dumps(rec) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class NullLog:
    """What ranks other than 0 log to (only rank 0 writes log.jsonl)."""

    def write(self, rec: dict) -> None:
        pass

    def close(self) -> None:
        pass


def plot_losses(log_path: Path, out: Path) -> None:
    """loss.png: per-step total loss (thin) and per-epoch mean per component, every stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(ln) for ln in log_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    recs = [r for r in recs if "t" in r]  # step records (epoch summaries have no "t")
    if not recs:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for stage, colour, name in ((1, "tab:blue", "IDSE"), (2, "tab:red", "CDSM"), (3, "tab:green", "mined pairs")):
        stage_recs = [r for r in recs if r["stage"] == stage]
        if stage_recs:
            axes[0].plot([r["t"] for r in stage_recs], [r["loss"] for r in stage_recs], lw=0.6, color=colour,
                         label=f"stage {stage} ({name})")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("total loss")
    axes[0].legend()
    keys = ["ince", "pnce", "sel", "dal", "spr", "sn2m", "inst", "pair"]
    epochs = sorted({r["epoch"] for r in recs})
    for k in keys:
        ys = [np.mean([r[k] for r in recs if r["epoch"] == e and k in r] or [np.nan]) for e in epochs]
        if not all(np.isnan(ys)):
            axes[1].plot(epochs, ys, marker="o", label=k)
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("mean loss term")
    axes[1].legend()
    fig.tight_layout()
    with replacing(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def progress_bar(console: Console, enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=not enabled, transient=False)


def save_prototypes(run_dir: Path, graph: PrototypeGraph) -> None:
    """The PrototypeGraph's files into run_dir, each replaced atomically."""
    replace_files(run_dir, graph.save)


# -- the loop --------------------------------------------------------------------------------------
def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True,
          pretrained: bool = True, console: Console | None = None,
          trunk_features: torch.Tensor | None = None,
          observer: Callable[[int, MinedPairs], None] | None = None) -> Path:
    """Train on cfg.data into run_dir. With resume, continue from run_dir/checkpoint.pt (its own
    config.json wins over `cfg`, except the device). `trunk_features` (experiments only): a cache
    computed earlier for the same images, input size and freeze point, used as is. `observer`
    (benchmarks only): called with (pair-stage epoch, MinedPairs) after each epoch's mining."""
    run_dir = Path(run_dir)
    job = distributed.setup(pick_device(cfg.device))  # torchrun: this rank; else one process
    if job.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True)
    if not job.is_main:  # only rank 0 prints and draws progress bars
        console, progress = Console(stderr=True, quiet=True), False
    keep_freed_memory()
    t_start = time.perf_counter()
    state = load_checkpoint(run_dir) if resume else None
    if state is not None:
        device_name = cfg.device
        cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
        cfg.device = device_name
    job.check_same("the checkpoint's epoch", state["epoch"] if state is not None else -1)
    device = job.device
    spec = cfg.model.preprocess()
    torch.manual_seed(cfg.seed)

    # 1. images
    with progress_bar(console, progress) as bar:
        task = bar.add_task("decode", total=None, info="")
        images: ImageSet = load_images(cfg.data, spec, cfg.domains or None,
                                       progress=lambda n: bar.advance(task, n))
    cfg.domains = images.domains
    sizes = images.sizes()
    console.print(f"data: {', '.join(f'{d} {n}' for d, n in zip(images.domains, sizes))} images; "
                  f"device {device}", markup=False)
    encoder = build_encoder(cfg.model, pretrained=pretrained).to(device)
    if state is not None:
        encoder.load_state_dict(state["model"])
    encoder = job.prepare(encoder, encoder.frozen_modules())
    if job.is_main:
        write_json(run_dir / "config.json", cfg.to_dict())

    # 2. cache of the frozen trunk
    key = trunk_cache.fingerprint(images, cfg.views, cfg.augment, cfg.seed, spec, cfg.model.freeze_blocks)
    feats = trunk_features if trunk_features is not None else trunk_cache.load(run_dir, key)
    if not job.all_agree(feats is not None):
        feats = None
    stages = build_stages(cfg, observer)
    total_epochs = sum(s.epochs for s in stages)
    if feats is None:
        t0 = time.perf_counter()
        with progress_bar(console, progress) as bar:
            task = bar.add_task("trunk cache", total=len(images) * (cfg.views + 1), info="")
            feats = trunk_cache.compute(encoder, images, cfg.views, cfg.augment, cfg.seed, spec, device,
                                        progress=lambda n: bar.advance(task, n * job.world),
                                        shard=(job.rank, job.world))
            feats = job.sum_shards(feats)
        if total_epochs > 1 and job.is_main:
            trunk_cache.save(run_dir, key, feats)
        console.print(f"trunk cache: {tuple(feats.shape)} float16, {feats.numel() * 2 / 2**20:.0f} MiB, "
                      f"{time.perf_counter() - t0:.0f} s", markup=False)
    elif trunk_features is not None and cfg.keep_cache and job.is_main:
        trunk_cache.save(run_dir, "given", feats)
    dom_all = torch.as_tensor(images.domain)
    slot_all = torch.as_tensor(images.slot)

    # 3. a linear head starts at the PCA of the clean images' features under it; memory banks (for
    #    UEM's stages) hold the clean images' embeddings
    ctx = Context(cfg=cfg, encoder=encoder, feats=feats, images=images, device=device, job=job)
    if state is None and cfg.model.head in ("linear", "grid"):
        init_linear_head(encoder.head, head_inputs_cached(encoder, feats[0], device).cpu(), dom_all.repeat(encoder.views))
    if state is not None:
        ctx.banks = [b.to(device) for b in state["banks"]]
    elif any(s.updates_banks for s in stages):
        clean = ctx.clean_embeddings()
        ctx.banks = [clean[torch.as_tensor(images.members(d)).to(device)].clone() for d in range(len(sizes))]

    # 4. epochs, stage by stage
    start = state["epoch"] if state is not None else 0
    log = Log(run_dir / LOG, start) if job.is_main else NullLog()
    encoder_top = job.wrap(distributed.EncoderTop(encoder))  # encoder.top; under DDP, averaged gradients
    n = len(images)
    n_batches = max(1, math.ceil(n / cfg.batch_size))
    global_step = start * n_batches
    with progress_bar(console, progress) as bar:
        task = bar.add_task("train", total=total_epochs * n_batches, completed=start * n_batches, info="")
        for stage in stages:
            if stage.first_epoch + stage.epochs <= start:
                continue  # finished before the checkpoint
            resuming = state is not None and start > stage.first_epoch
            if resuming and state.get("stage", stage.name) != stage.name:
                raise RuntimeError(f"checkpoint of stage {state['stage']!r} where this config has {stage.name!r}")
            # the stage's own random draws (CDSM's domain classifier) come from this seed, so a run
            # resumed at a stage boundary builds the same modules as an uninterrupted one
            torch.manual_seed(cfg.seed * 1000 + max(start, stage.first_epoch))
            stage.start(ctx, state["stage_state"] if resuming else None)
            for stage_epoch in range(max(start - stage.first_epoch, 0), stage.epochs):
                epoch = stage.first_epoch + stage_epoch
                rng = np.random.default_rng([cfg.seed, epoch])
                torch.manual_seed(cfg.seed * 1000 + epoch)
                targets = stage.begin_epoch(ctx, stage_epoch, cfg.seed + epoch)
                bar.update(task, description=f"{stage.name} ep {stage_epoch + 1}/{stage.epochs}")
                train_mode(encoder)
                order = rng.permutation(n)
                views = rng.integers(1, cfg.views + 1, size=n) if cfg.views > 0 else np.zeros(n, dtype=np.int64)
                epoch_losses = []
                for step, idx in enumerate(np.array_split(order, n_batches)):
                    lr = set_lr(stage.optimizer, (stage_epoch * n_batches + step) / (stage.epochs * n_batches))
                    local_idx = job.local(idx)  # this rank's slice; f gathered back to the whole batch
                    trunk_out = feats[torch.as_tensor(views[local_idx]), torch.as_tensor(local_idx)].to(device).float()
                    dom = dom_all[idx].to(device)
                    slot = slot_all[idx].to(device)
                    f = job.gather(encoder_top(trunk_out), len(idx))
                    loss, parts = stage.loss(ctx, f, trunk_out, dom, slot)
                    stage.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    stage.optimizer.step()
                    stage.after_step(ctx, f.detach(), dom, slot)
                    global_step += 1
                    epoch_losses.append(loss.item())
                    log.write({"t": global_step, "stage": stage.number, "epoch": epoch, "step": step, "lr": lr,
                               "loss": loss.item(), **{k: round(v, 5) for k, v in parts.items()}})
                    bar.update(task, advance=1, info=f"loss {loss.item():.3f}")
                summary = {"epoch": epoch, "stage": stage.number, **targets,
                           "loss": round(float(np.mean(epoch_losses)), 4),
                           "seconds": round(time.perf_counter() - t_start, 1)}
                log.write(summary)
                said = ", ".join(f"{k} {v}" for k, v in targets.items() if k != "alpha")
                bar.console.print(f"{stage.name} epoch {stage_epoch + 1}/{stage.epochs}: loss {summary['loss']:.4f}, "
                                  f"{said}, {summary['seconds']:.0f} s", markup=False)
                if job.is_main:
                    save_checkpoint(run_dir, epoch + 1, encoder, stage, ctx.banks)
            state = None
    log.close()

    # 5. outputs: the final prototypes from the clean images' embeddings (written by rank 0)
    clean = ctx.clean_embeddings().cpu().numpy()
    if not job.is_main:
        job.barrier()  # wait for rank 0's outputs, so the job ends when the run is complete
        job.close()
        return run_dir
    vectors = {name: clean[images.members(d)] for d, name in enumerate(images.domains)}
    final_k = [cfg.baseline_k] * len(sizes) if cfg.baseline_k is not None else [None] * len(sizes)
    protos = {name: domain_prototypes(vectors[name], final_k[d], seed=cfg.seed, k_min=cfg.k_min, k_max=cfg.k_max)
              for d, name in enumerate(images.domains)}
    matches = match_domains(protos, rule=cfg.merge_rule, merge=cfg.merges)
    save_prototypes(run_dir, graph_from(vectors, protos, matches))
    save_encoder(run_dir, encoder.cpu(), cfg)
    plot_losses(run_dir / LOG, run_dir / LOSS_PNG)
    if not cfg.keep_cache:
        (run_dir / trunk_cache.CACHE).unlink(missing_ok=True)
    console.print(f"done in {time.perf_counter() - t_start:.0f} s: {run_dir}", markup=False)
    job.barrier()
    job.close()
    return run_dir
