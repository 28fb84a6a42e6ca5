"""The UEM training loop: stage 1 IDSE, then stage 2 CDSM, on a cached frozen trunk.

What the defaults (uem.train.config.TrainConfig) train: EfficientNet-Lite0 with blocks 0-13 frozen
at their ImageNet weights; every picture goes through the same weights twice, as itself and as a
line drawing of itself (line_view: the embedding is both views' halves); the projection head is one
linear layer started at the PCA of the clean images' pooled features (head "linear").

Read top to bottom:
  1. images  — every domain's images decoded once (uem.train.data), nothing below a domain read.
  2. cache   — the frozen trunk's float16 outputs for the clean image + `views` (3) augmented views.
  3. banks   — one memory-bank row per image, per domain, started from the clean embeddings
               (bank momentum 0.5: a few epochs need a faster bank than the paper's 0.99).
  4. epochs  — 4 of stage 1, then 2 of stage 2. Each epoch: re-cluster every bank (K estimated at
               the start of each stage), pair and merge prototypes across every pair of domains
               (the "local" merge rule, uem.train.config.DEFAULT_MERGE_RULE), then one pass over all images in random batches, each
               image as one of its cached augmented views.
               stage 1 (IDSE):  sum_d  L_IPM^d + alpha * mean_{d' != d} L_SEL^{d|d'},
                                L_IPM = L_INCE + alpha * L_PNCE
               stage 2 (CDSM):  L_DAL + sum_d ( L_SPR^d + mean_{d' != d} L_SN2M^{d->d'} )
               with PLAIN nearest-neighbour positives by default (plain_nn; measured ahead of SN2M
               on top-1 identity, benchmarks/RESULTS.md): p~ and the nearest bank entry of d',
               always. `--sn2m` is UEM-METHOD.md's SN2M: that neighbour counts only when its
               nearest prototype agrees with p~.
               Ablations: --no-merge, --no-sel, --no-spda (no L_DAL, no L_SPR), --baseline-k K
               (fixed K, no merge, no SEL).
  5. outputs — encoder.pt + config.json (the export contract), checkpoint.pt after every epoch (for
               --resume), log.jsonl, loss.png, prototypes.npy/json (the final PrototypeGraph).

The method's math lives in uem.train.losses and uem.train.prototypes; this file only wires it.
Why one file of ~520 lines: the loop reads top to bottom as one story (nanoGPT's train.py); the
stages become objects of their own when the training itself is redesigned.
"""

from __future__ import annotations

import copy
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
from . import cache as trunk_cache
from . import distributed, losses
from .backbone import FEATURE_DIM
from .config import TrainConfig, write_json
from .data import ImageSet, load_images
from .model import Encoder, build_encoder, init_linear_head
from .prototypes import EpochPrototypes, domain_prototypes, estimate_k, graph_from, match_domains
from .run import save_encoder, save_torch_atomic

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


def make_optimizer(encoder: Encoder, cfg: TrainConfig, extra: list[torch.nn.Parameter] = ()) -> torch.optim.SGD:
    """SGD with two learning rates: the projection head (and the domain classifier) at lr, the
    trainable backbone blocks at lr * backbone_lr_mult."""
    head = {id(p) for p in encoder.head.parameters()}
    trainable = encoder.trainable_parameters()
    groups = [{"params": [p for p in trainable if id(p) not in head], "lr": cfg.lr * cfg.backbone_lr_mult},
              {"params": [p for p in trainable if id(p) in head] + list(extra), "lr": cfg.lr}]
    for g in groups:
        g["base_lr"] = g["lr"]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def set_lr(opt: torch.optim.Optimizer, progress: float) -> float:
    """Cosine from base_lr to 0 over a stage; progress in [0, 1)."""
    scale = 0.5 * (1.0 + math.cos(math.pi * progress))
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * scale
    return opt.param_groups[-1]["lr"]


def train_mode(encoder: Encoder) -> None:
    """Trainable part in train mode; the frozen trunk (and its BatchNorm statistics) stays in eval."""
    encoder.train()
    for m in encoder.frozen_modules():
        m.eval()


@torch.no_grad()
def _over_cache(fn, encoder: Encoder, feats: torch.Tensor, device: torch.device, batch: int) -> list[torch.Tensor]:
    """fn(batch of cached trunk outputs) for every batch of `feats`, the encoder in eval mode."""
    was_training = encoder.training
    encoder.eval()
    out = [fn(feats[i:i + batch].to(device).float()) for i in range(0, len(feats), batch)]
    encoder.train(was_training)
    return out


def embed_cached(encoder: Encoder, feats: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """Embeddings (N, D) float32 of cached trunk outputs (N, C, H, W), eval mode."""
    return torch.cat(_over_cache(encoder.top, encoder, feats, device, batch))


def pooled_cached(encoder: Encoder, feats: torch.Tensor, device: torch.device, batch: int = 256) -> torch.Tensor:
    """The 1280-d pooled backbone features (views * N, 1280) of cached trunk outputs, eval mode:
    all first views, then all line-art views (Encoder.pooled)."""
    parts = _over_cache(lambda h: encoder.pooled(h).reshape(encoder.views, -1, FEATURE_DIM), encoder, feats,
                        device, batch)
    return torch.cat(parts, dim=1).reshape(-1, FEATURE_DIM)


def epoch_prototypes(banks: list[torch.Tensor], domains: list[str], ks: list[int], cfg: TrainConfig,
                     seed: int, device: torch.device) -> EpochPrototypes:
    """This epoch's clusterings and matches of the banks, as tensors on `device`."""
    return EpochPrototypes.build([b.cpu().numpy() for b in banks], domains, ks, seed, device,
                                 rule=cfg.merge_rule, merge=cfg.merges)


def share_prototypes(job: distributed.Dist, make: Callable[[], EpochPrototypes],
                     n_domains: int) -> EpochPrototypes:
    """`make()` on rank 0 only (k-means and the merge are the expensive, seed-sensitive part), its
    tensors broadcast and rebuilt into EpochPrototypes on the other ranks."""
    if not job.active:
        return make()
    mine = make() if job.is_main else None
    got = job.broadcast_tensors(mine.to_tensors() if mine is not None else None)
    if mine is not None:
        return mine
    return EpochPrototypes.from_tensors([t.to(job.device) for t in got], n_domains)


def estimate_ks(banks: list[torch.Tensor], cfg: TrainConfig, seed: int) -> list[int]:
    """K per domain: the user's fixed K in baseline mode, otherwise estimated from the bank."""
    if cfg.baseline_k is not None:
        return [int(cfg.baseline_k)] * len(banks)
    return [estimate_k(b.cpu().numpy(), k_min=cfg.k_min, k_max=cfg.k_max, seed=seed) for b in banks]


# -- the two stages' losses for one batch ----------------------------------------------------------
def stage1_loss(f: torch.Tensor, dom: torch.Tensor, slot: torch.Tensor, banks: list[torch.Tensor],
                protos: EpochPrototypes, alpha_weight: float, cfg: TrainConfig
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """L_IDSE = sum_d [ L_INCE^d + alpha L_PNCE^d + alpha mean_{e != d} L_SEL^{d|e} ] over the batch's
    domains; `alpha_weight` is alpha(e, E)."""
    n_dom = len(banks)
    total = f.new_zeros(())
    parts = {"ince": 0.0, "pnce": 0.0, "sel": 0.0}
    for d in range(n_dom):
        rows = dom == d
        if not rows.any():
            continue
        f_d, slots_d = f[rows], slot[rows]
        ince = losses.instance_nce(f_d, banks[d], slots_d, cfg.tau)
        pnce = losses.proto_nce(f_d, protos.centroids[d], protos.assign[d][slots_d], cfg.tau)
        total = total + ince + alpha_weight * pnce
        parts["ince"] += ince.item()
        parts["pnce"] += pnce.item()
        if cfg.uses_sel:
            sel = torch.stack([losses.sel(f_d, protos.own_unified[d, e], cfg.tau)
                               for e in range(n_dom) if e != d]).mean()
            total = total + alpha_weight * sel
            parts["sel"] += sel.item()
    return total, parts


def stage2_loss(f: torch.Tensor, f_frozen: torch.Tensor, dom: torch.Tensor, banks: list[torch.Tensor],
                protos: EpochPrototypes, classifier: torch.nn.Module | None, cfg: TrainConfig
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """L_CDSM = L_DAL + sum_d ( L_SPR^d + mean_{e != d} L_SN2M^{d->e} ); SN2M's positives are plain
    nearest neighbours when cfg.plain_nn (the default). `classifier`: the domain classifier (None
    without SPDA: no L_DAL and no L_SPR)."""
    n_dom = len(banks)
    total = f.new_zeros(())
    parts = {"dal": 0.0, "spr": 0.0, "sn2m": 0.0, "trusted": 0.0}
    if classifier is not None:
        dal = losses.domain_adversarial_loss(f, dom, classifier)
        total = total + dal
        parts["dal"] = dal.item()
    trusted, seen = 0, 0
    for d in range(n_dom):
        rows = dom == d
        if not rows.any():
            continue
        f_d = f[rows]
        if classifier is not None and int(rows.sum()) > 1:
            spr = losses.spr(f_d, f_frozen[rows])
            total = total + spr
            parts["spr"] += spr.item()
        terms = []
        for e in range(n_dom):
            if e == d:
                continue
            loss, trusted_rows = losses.sn2m(f_d, protos.centroids[d], protos.tilde_index[d, e],
                                             protos.target_unified[d, e], banks[e], cfg.tau,
                                             plain_nn=cfg.plain_nn)
            terms.append(loss)
            trusted += int(trusted_rows.sum())
            seen += len(trusted_rows)
        sn2m = torch.stack(terms).mean()
        total = total + sn2m
        parts["sn2m"] += sn2m.item()
    parts["trusted"] = trusted / max(seen, 1)
    return total, parts


# -- checkpoint ------------------------------------------------------------------------------------
def save_checkpoint(run_dir: Path, epoch: int, encoder: Encoder, opt: torch.optim.Optimizer,
                    banks: list[torch.Tensor], ks: list[int], frozen: Encoder | None,
                    classifier: torch.nn.Module | None) -> None:
    """Tensors and plain types only (loaded with weights_only=True). epoch = epochs completed.
    RNG state needs no saving: every epoch reseeds from (seed, epoch)."""
    on_cpu = lambda state: {k: v.detach().cpu() if torch.is_tensor(v) else v  # noqa: E731
                            for k, v in state.items()}
    save_torch_atomic({
        "epoch": epoch,
        "model": on_cpu(encoder.state_dict()),
        "optimizer": opt.state_dict(),
        "banks": [b.cpu() for b in banks],
        "ks": list(ks),
        "frozen": on_cpu(frozen.state_dict()) if frozen is not None else None,
        "disc": on_cpu(classifier.state_dict()) if classifier is not None else None,
    }, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


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
    """loss.png: per-step total loss (thin) and per-epoch mean per component, both stages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(ln) for ln in log_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    recs = [r for r in recs if "t" in r]  # step records (epoch summaries have no "t")
    if not recs:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for stage, colour in ((1, "tab:blue"), (2, "tab:red")):
        stage_recs = [r for r in recs if r["stage"] == stage]
        if stage_recs:
            axes[0].plot([r["t"] for r in stage_recs], [r["loss"] for r in stage_recs], lw=0.6, color=colour,
                         label=f"stage {stage} ({'IDSE' if stage == 1 else 'CDSM'})")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("total loss")
    axes[0].legend()
    keys = ["ince", "pnce", "sel", "dal", "spr", "sn2m"]
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
          trunk_features: torch.Tensor | None = None) -> Path:
    """Train on cfg.data into run_dir. With resume, continue from run_dir/checkpoint.pt (its own
    config.json wins over `cfg`, except the device). `trunk_features` (experiments only): a cache
    computed earlier for the same images, input size and freeze point, used as is."""
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
    if feats is None:
        t0 = time.perf_counter()
        with progress_bar(console, progress) as bar:
            task = bar.add_task("trunk cache", total=len(images) * (cfg.views + 1), info="")
            feats = trunk_cache.compute(encoder, images, cfg.views, cfg.augment, cfg.seed, spec, device,
                                        progress=lambda n: bar.advance(task, n * job.world),
                                        shard=(job.rank, job.world))
            feats = job.sum_shards(feats)
        if cfg.epochs1 + cfg.epochs2 > 1 and job.is_main:
            trunk_cache.save(run_dir, key, feats)
        console.print(f"trunk cache: {tuple(feats.shape)} float16, {feats.numel() * 2 / 2**20:.0f} MiB, "
                      f"{time.perf_counter() - t0:.0f} s", markup=False)
    elif trunk_features is not None and cfg.keep_cache and job.is_main:
        trunk_cache.save(run_dir, "given", feats)
    members = [torch.as_tensor(images.members(d)) for d in range(len(sizes))]
    dom_all = torch.as_tensor(images.domain)
    slot_all = torch.as_tensor(images.slot)

    # 3. a linear head starts at the PCA of the clean images' pooled features; memory banks hold the
    #    clean images' embeddings
    if state is None and cfg.model.head == "linear":
        init_linear_head(encoder.head, pooled_cached(encoder, feats[0], device).cpu(), dom_all.repeat(encoder.views))
    if state is not None:
        banks = [b.to(device) for b in state["banks"]]
    else:
        clean = job.embed(lambda rows: embed_cached(encoder, feats[0][rows], device), n=len(images))
        banks = [clean[m.to(device)].clone() for m in members]

    # 4. epochs
    epochs1, epochs2 = cfg.epochs1, cfg.epochs2
    start = state["epoch"] if state is not None else 0
    ks = list(state["ks"]) if state is not None else []
    frozen: Encoder | None = None
    classifier: losses.DomainClassifier | None = None
    opt: torch.optim.Optimizer | None = None
    log = Log(run_dir / LOG, start) if job.is_main else NullLog()
    encoder_top = job.wrap(distributed.EncoderTop(encoder))  # encoder.top; under DDP, averaged gradients
    classifier_ddp = None
    n = len(images)
    n_batches = max(1, math.ceil(n / cfg.batch_size))
    global_step = start * n_batches
    with progress_bar(console, progress) as bar:
        task = bar.add_task("train", total=(epochs1 + epochs2) * n_batches, completed=start * n_batches, info="")
        for epoch in range(start, epochs1 + epochs2):
            stage = 1 if epoch < epochs1 else 2
            stage_epoch = epoch if stage == 1 else epoch - epochs1
            stage_epochs = epochs1 if stage == 1 else epochs2
            rng = np.random.default_rng([cfg.seed, epoch])
            torch.manual_seed(cfg.seed * 1000 + epoch)
            # the stage's modules: built fresh at its first epoch, or from the checkpoint
            if opt is None or stage_epoch == 0:
                if stage == 2:
                    # f': the stage-1 encoder, frozen; run with batch statistics like f, so that
                    # L_SPR is exactly 0 at the start of stage 2
                    frozen = copy.deepcopy(encoder)
                    if state is not None and state.get("frozen") is not None and stage_epoch > 0:
                        frozen.load_state_dict(state["frozen"])
                    for p in frozen.parameters():
                        p.requires_grad_(False)
                    train_mode(frozen)
                    classifier = (losses.DomainClassifier(cfg.model.embed_dim, len(sizes)).to(device)
                                  if cfg.spda else None)
                    if classifier is not None and state is not None and state.get("disc") is not None \
                            and stage_epoch > 0:
                        classifier.load_state_dict(state["disc"])
                    classifier_ddp = job.wrap(classifier) if classifier is not None else None
                opt = make_optimizer(encoder, cfg, list(classifier.parameters()) if classifier is not None else [])
                if state is not None and stage_epoch > 0 and epoch == start:
                    opt.load_state_dict(state["optimizer"])
                if stage_epoch == 0:
                    ks = job.from_main(lambda: estimate_ks(banks, cfg, cfg.seed + epoch))
            epoch_protos = share_prototypes(
                job, lambda: epoch_prototypes(banks, images.domains, ks, cfg, cfg.seed + epoch, device), len(sizes))
            alpha_weight = losses.alpha(stage_epoch, stage_epochs)
            bar.update(task, description=f"stage {stage} ep {stage_epoch + 1}/{stage_epochs}")
            train_mode(encoder)
            order = rng.permutation(n)
            views = rng.integers(1, cfg.views + 1, size=n) if cfg.views > 0 else np.zeros(n, dtype=np.int64)
            epoch_losses = []
            for step, idx in enumerate(np.array_split(order, n_batches)):
                lr = set_lr(opt, (stage_epoch * n_batches + step) / (stage_epochs * n_batches))
                local_idx = job.local(idx)  # this rank's slice; f and f_frozen gathered back to the whole batch
                trunk_out = feats[torch.as_tensor(views[local_idx]), torch.as_tensor(local_idx)].to(device).float()
                dom = dom_all[idx].to(device)
                slot = slot_all[idx].to(device)
                f = job.gather(encoder_top(trunk_out), len(idx))
                if stage == 1:
                    loss, parts = stage1_loss(f, dom, slot, banks, epoch_protos, alpha_weight, cfg)
                else:
                    with torch.no_grad():
                        f_frozen = job.gather(frozen.top(trunk_out), len(idx))
                    loss, parts = stage2_loss(f, f_frozen, dom, banks, epoch_protos, classifier_ddp, cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                for d in range(len(banks)):
                    rows = dom == d
                    if rows.any():
                        losses.update_bank(banks[d], slot[rows], f[rows], cfg.bank_momentum)
                global_step += 1
                epoch_losses.append(loss.item())
                log.write({"t": global_step, "stage": stage, "epoch": epoch, "step": step, "lr": lr,
                           "alpha": alpha_weight, "loss": loss.item(), **{k: round(v, 5) for k, v in parts.items()}})
                bar.update(task, advance=1, info=f"loss {loss.item():.3f}")
            summary = {"epoch": epoch, "stage": stage, "ks": ks, "merged": epoch_protos.merged_count(),
                       "loss": round(float(np.mean(epoch_losses)), 4), "seconds": round(time.perf_counter() - t_start, 1)}
            log.write(summary)
            bar.console.print(f"stage {stage} epoch {stage_epoch + 1}/{stage_epochs}: loss {summary['loss']:.4f}, "
                              f"K {ks}, {summary['merged']} merged pairs, {summary['seconds']:.0f} s", markup=False)
            if job.is_main:
                save_checkpoint(run_dir, epoch + 1, encoder, opt, banks, ks, frozen, classifier)
            state = None
    log.close()

    # 5. outputs: the final prototypes from the clean images' embeddings (written by rank 0)
    clean = job.embed(lambda rows: embed_cached(encoder, feats[0][rows], device), n=len(images)).cpu().numpy()
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
