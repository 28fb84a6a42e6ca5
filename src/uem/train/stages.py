"""The training stages as objects: each owns its loss for a batch, its optimiser, its per-epoch
targets and its state for --resume; `uem.train.trainer.train` is a loop over them.

  IdseStage  (stage 1, docs/method.md IDSE) sum_d L_IPM^d + alpha mean_{e != d} L_SEL^{d|e}
  CdsmStage  (stage 2, docs/method.md CDSM) L_DAL + sum_d ( L_SPR^d + mean_{e != d} L_SN2M^{d->e} )
  PairStage  (stage 3, the default)         sum_d w L_inst^d + mean_{e != d} L_pair^{d->e}

PairStage learns in the space the bundle is searched in: at the start of every epoch each domain's
clean embeddings are whitened on their own (the export's alignment, uem.train.pairs) and the
cross-domain positives re-mined as mutual CSLS nearest neighbours; an augmented view is then pulled
to its mined partner in every other domain (L_pair, losses.pair_nce) and, with weight
`pairs_instance_weight` (0 by default: it measured no better), to its own clean embedding (L_inst),
each against the whole target domain. The targets stay fixed
within an epoch, so a batch's loss needs no memory bank.

The UEM stages keep one memory bank per domain (momentum `bank_momentum`), started from the clean
embeddings; they run only when their epochs are > 0 (off by default: benchmarks/RESULTS.md,
"Training that learns", measures each one at the grid read-out).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import distributed, losses
from .cached_embed import embed_cached
from .config import TrainConfig
from .data import ImageSet
from .model import EncoderNet
from .pairs import MinedPairs, mine
from .prototypes import EpochPrototypes, estimate_k

PAIRS_WEIGHT_DECAY = 1e-4  # AdamW's decoupled decay in the pair stage


@dataclass
class Context:
    """What every stage may read: the run's config, the encoder, the cached trunk outputs, the
    images' domain/slot, the memory banks (one per domain, rows = slots) and the process group."""

    cfg: TrainConfig
    encoder: EncoderNet
    feats: torch.Tensor            # float16 (views + 1, N, C, H, W), view 0 the clean image
    images: ImageSet
    device: torch.device
    job: distributed.Dist
    banks: list[torch.Tensor] = field(default_factory=list)

    @property
    def n_domains(self) -> int:
        return len(self.images.domains)

    def clean_embeddings(self) -> torch.Tensor:
        """(N, D) embeddings of the clean images, eval mode (all ranks get all rows)."""
        return self.job.embed(lambda rows: embed_cached(self.encoder, self.feats[0][rows], self.device),
                              n=len(self.images))


def param_groups(encoder: EncoderNet, lr: float, backbone_lr_mult: float,
                 extra: list[torch.nn.Parameter] = ()) -> list[dict]:
    """Two learning rates: the projection head (and `extra`, the domain classifier) at lr, the
    trainable backbone blocks at lr * backbone_lr_mult; empty groups left out; each group keeps its
    base_lr for the cosine schedule (trainer.set_lr)."""
    head = {id(p) for p in encoder.head.parameters()}
    trainable = encoder.trainable_parameters()
    groups = [{"params": [p for p in trainable if id(p) not in head], "lr": lr * backbone_lr_mult},
              {"params": [p for p in trainable if id(p) in head] + list(extra), "lr": lr}]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["base_lr"] = g["lr"]
    return groups


def sgd(encoder: EncoderNet, cfg: TrainConfig, extra: list[torch.nn.Parameter] = ()) -> torch.optim.SGD:
    """The UEM stages' optimiser: SGD with momentum at cfg.lr (param_groups)."""
    return torch.optim.SGD(param_groups(encoder, cfg.lr, cfg.backbone_lr_mult, extra), lr=cfg.lr,
                           momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class Stage:
    """One stage: `start` once (fresh, or from a checkpoint's `resume` state), `begin_epoch` before
    every epoch, `loss` for every batch, `after_step` after every optimiser step."""

    name = ""
    number = 0
    updates_banks = False

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.optimizer: torch.optim.Optimizer | None = None

    def start(self, ctx: Context, resume: dict | None) -> None:
        raise NotImplementedError

    def begin_epoch(self, ctx: Context, stage_epoch: int, seed: int) -> dict:
        """This epoch's targets; returns what the epoch's log line reports."""
        raise NotImplementedError

    def loss(self, ctx: Context, f: torch.Tensor, trunk_out: torch.Tensor, dom: torch.Tensor,
             slot: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def after_step(self, ctx: Context, f: torch.Tensor, dom: torch.Tensor, slot: torch.Tensor) -> None:
        if self.updates_banks:
            for d in range(ctx.n_domains):
                rows = dom == d
                if rows.any():
                    losses.update_bank(ctx.banks[d], slot[rows], f[rows], ctx.cfg.bank_momentum)

    def state_dict(self) -> dict:
        """Tensors and plain types only (the checkpoint loads with weights_only=True)."""
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}


def _prototype_tensors(ctx: Context, ks: list[int], seed: int) -> EpochPrototypes:
    """This epoch's clusterings and matches of the banks: made on rank 0 (k-means and the merge are
    the expensive, seed-sensitive part), its tensors broadcast to the other ranks."""
    job, cfg = ctx.job, ctx.cfg

    def make() -> EpochPrototypes:
        return EpochPrototypes.build([b.cpu().numpy() for b in ctx.banks], ctx.images.domains, ks, seed,
                                     ctx.device, rule=cfg.merge_rule, merge=cfg.merges)

    if not job.active:
        return make()
    mine_ = make() if job.is_main else None
    got = job.broadcast_tensors(mine_.to_tensors() if mine_ is not None else None)
    if mine_ is not None:
        return mine_
    return EpochPrototypes.from_tensors([t.to(job.device) for t in got], ctx.n_domains)


def estimate_ks(banks: list[torch.Tensor], cfg: TrainConfig, seed: int) -> list[int]:
    """K per domain: the user's fixed K in baseline mode, otherwise estimated from the bank."""
    if cfg.baseline_k is not None:
        return [int(cfg.baseline_k)] * len(banks)
    return [estimate_k(b.cpu().numpy(), k_min=cfg.k_min, k_max=cfg.k_max, seed=seed) for b in banks]


class IdseStage(Stage):
    """UEM's stage 1: instance and prototype contrast within each domain, SEL across domains."""

    name, number, updates_banks = "idse", 1, True

    def start(self, ctx: Context, resume: dict | None) -> None:
        self._start_optimizer(ctx, resume, sgd(ctx.encoder, ctx.cfg))

    def _start_optimizer(self, ctx: Context, resume: dict | None, optimizer: torch.optim.Optimizer) -> None:
        """The stage's optimiser and K per domain: from the checkpoint, or fresh (K estimated on
        rank 0 from the banks as the stage starts)."""
        self.optimizer = optimizer
        self.ks = list(resume["ks"]) if resume else ctx.job.from_main(
            lambda: estimate_ks(ctx.banks, ctx.cfg, ctx.cfg.seed + self.first_epoch))
        if resume:
            self.optimizer.load_state_dict(resume["optimizer"])

    def begin_epoch(self, ctx: Context, stage_epoch: int, seed: int) -> dict:
        self.protos = _prototype_tensors(ctx, self.ks, seed)
        self.alpha = losses.alpha(stage_epoch, self.epochs)
        return {"ks": self.ks, "merged": self.protos.merged_count(), "alpha": self.alpha}

    def loss(self, ctx, f, trunk_out, dom, slot):
        """L_IDSE = sum_d [ L_INCE^d + alpha L_PNCE^d + alpha mean_{e != d} L_SEL^{d|e} ] over the
        batch's domains; alpha = alpha(e, E) of this epoch."""
        cfg, protos = ctx.cfg, self.protos
        total = f.new_zeros(())
        parts = {"ince": 0.0, "pnce": 0.0, "sel": 0.0}
        for d in range(ctx.n_domains):
            rows = dom == d
            if not rows.any():
                continue
            f_d, slots_d = f[rows], slot[rows]
            total = total + losses.ipm(f_d, ctx.banks[d], slots_d, protos.centroids[d], protos.assign[d][slots_d],
                                       self.alpha, cfg.tau, terms=parts)
            if cfg.uses_sel:
                sel = torch.stack([losses.sel(f_d, protos.own_unified[d, e], cfg.tau)
                                   for e in range(ctx.n_domains) if e != d]).mean()
                total = total + self.alpha * sel
                parts["sel"] += sel.item()
        return total, parts

    def state_dict(self) -> dict:
        return {**super().state_dict(), "ks": list(self.ks)}


class CdsmStage(IdseStage):
    """UEM's stage 2: nearest-neighbour (or SN2M) positives across domains, with SPDA (a domain
    classifier through gradient reversal, and SPR against the encoder as it entered the stage)."""

    name, number, updates_banks = "cdsm", 2, True

    def start(self, ctx: Context, resume: dict | None) -> None:
        cfg = ctx.cfg
        # f': the encoder as it entered the stage, frozen; run with batch statistics like f, so
        # that L_SPR is exactly 0 at the start of the stage
        self.frozen = copy.deepcopy(ctx.encoder)
        if resume and resume.get("frozen") is not None:
            self.frozen.load_state_dict(resume["frozen"])
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        train_mode(self.frozen)
        self.classifier = (losses.DomainClassifier(cfg.model.embed_dim, ctx.n_domains).to(ctx.device)
                           if cfg.spda else None)
        if self.classifier is not None and resume and resume.get("disc") is not None:
            self.classifier.load_state_dict(resume["disc"])
        self.classifier_ddp = ctx.job.wrap(self.classifier) if self.classifier is not None else None
        self._start_optimizer(ctx, resume,
                              sgd(ctx.encoder, cfg, list(self.classifier.parameters()) if self.classifier else []))

    def loss(self, ctx, f, trunk_out, dom, slot):
        """L_CDSM = L_DAL + sum_d ( L_SPR^d + mean_{e != d} L_SN2M^{d->e} ); SN2M's positives are
        plain nearest neighbours when cfg.plain_nn (its default); without SPDA no L_DAL, no L_SPR."""
        cfg, protos, job = ctx.cfg, self.protos, ctx.job
        with torch.no_grad():  # trunk_out is this rank's slice of the batch, f the whole batch
            f_frozen = job.gather(self.frozen.top(trunk_out), len(dom))
        total = f.new_zeros(())
        parts = {"dal": 0.0, "spr": 0.0, "sn2m": 0.0, "trusted": 0.0}
        if self.classifier_ddp is not None:
            dal = losses.domain_adversarial_loss(f, dom, self.classifier_ddp)
            total = total + dal
            parts["dal"] = dal.item()
        trusted, seen = 0, 0
        for d in range(ctx.n_domains):
            rows = dom == d
            if not rows.any():
                continue
            f_d = f[rows]
            if self.classifier_ddp is not None and int(rows.sum()) > 1:
                spr = losses.spr(f_d, f_frozen[rows])
                total = total + spr
                parts["spr"] += spr.item()
            terms = []
            for e in range(ctx.n_domains):
                if e == d:
                    continue
                loss, trusted_rows = losses.sn2m(f_d, protos.centroids[d], protos.tilde_index[d, e],
                                                 protos.target_unified[d, e], ctx.banks[e], cfg.tau,
                                                 plain_nn=cfg.plain_nn)
                terms.append(loss)
                trusted += int(trusted_rows.sum())
                seen += len(trusted_rows)
            sn2m = torch.stack(terms).mean()
            total = total + sn2m
            parts["sn2m"] += sn2m.item()
        parts["trusted"] = trusted / max(seen, 1)
        return total, parts

    def state_dict(self) -> dict:
        on_cpu = lambda state: {k: v.detach().cpu() for k, v in state.items()}  # noqa: E731
        return {**super().state_dict(), "frozen": on_cpu(self.frozen.state_dict()),
                "disc": on_cpu(self.classifier.state_dict()) if self.classifier is not None else None}


class PairStage(Stage):
    """Mined cross-domain pairs in the whitened space (the default; the module docstring says how).
    `observer(stage_epoch, mined)` (benchmarks: the mined pairs' precision per epoch, read with
    labels outside training) is called after each epoch's mining."""

    name, number = "pairs", 3

    def __init__(self, epochs: int, observer: Callable[[int, MinedPairs], None] | None = None):
        super().__init__(epochs)
        self.observer = observer

    def start(self, ctx: Context, resume: dict | None) -> None:
        """AdamW: the head at pairs_lr, trainable backbone blocks (linear / mlp heads) at
        pairs_lr * backbone_lr_mult."""
        cfg = ctx.cfg
        self.optimizer = torch.optim.AdamW(param_groups(ctx.encoder, cfg.pairs_lr, cfg.backbone_lr_mult),
                                           lr=cfg.pairs_lr, weight_decay=PAIRS_WEIGHT_DECAY)
        if resume:
            self.optimizer.load_state_dict(resume["optimizer"])

    def begin_epoch(self, ctx: Context, stage_epoch: int, seed: int) -> dict:
        """Whiten each domain's clean embeddings on its own and mine the mutual CSLS pairs: on rank 0
        (SVD rounding may differ between processes), the result broadcast to the other ranks."""
        cfg, dev, job = ctx.cfg, ctx.device, ctx.job
        clean = ctx.clean_embeddings().cpu().numpy()
        vectors = [clean[ctx.images.members(d)] for d in range(ctx.n_domains)]
        mined = mine(vectors, cfg.align_shrinkage, cfg.pairs_k) if job.is_main else None
        if job.active:
            got = job.broadcast_tensors([torch.from_numpy(a) for a in mined.to_arrays()] if mined is not None else None)
            mined = mined or MinedPairs.from_arrays([t.cpu().numpy() for t in got], ctx.n_domains)
        if self.observer is not None and job.is_main:
            self.observer(stage_epoch, mined)
        self.means = [torch.from_numpy(m).to(dev) for m in mined.means]
        self.whiteners = [torch.from_numpy(w).to(dev) for w in mined.whiteners]
        self.targets = [torch.from_numpy(v).to(dev) for v in mined.aligned]
        self.partner = {k: torch.from_numpy(p).to(dev) for k, p in mined.partner.items()}
        names = ctx.images.domains
        return {"pairs": {f"{names[d]}-{names[e]}": n for (d, e), n in mined.counts().items()}}

    def loss(self, ctx, f, trunk_out, dom, slot):
        """sum_d [ w L_inst^d + mean_{e != d} L_pair^{d->e} ]: the batch's rows of domain d whitened
        with d's fixed alignment, against d's clean targets (the row's own slot) and against each
        other domain's targets (the row's mined partner there)."""
        cfg = ctx.cfg
        total = f.new_zeros(())
        parts = {"inst": 0.0, "pair": 0.0, "paired": 0.0}
        n_dom = ctx.n_domains
        for d in range(n_dom):
            rows = dom == d
            if not rows.any():
                continue
            a = losses.whiten_rows(f[rows], self.means[d], self.whiteners[d])
            slots = slot[rows]
            if cfg.pairs_instance_weight > 0:  # off by default: no bank-wide softmax for nothing
                inst = losses.instance_nce(a, self.targets[d], slots, cfg.pairs_tau)
                total = total + cfg.pairs_instance_weight * inst
                parts["inst"] += inst.item()
            if n_dom > 1:
                partners = [(e, self.partner[(d, e)][slots]) for e in range(n_dom) if e != d]
                pair = torch.stack([losses.pair_nce(a, self.targets[e], p, cfg.pairs_tau) for e, p in partners]).mean()
                total = total + pair
                parts["pair"] += pair.item()
                parts["paired"] += float(sum(int((p >= 0).sum()) for _, p in partners))
        parts["paired"] /= max(len(dom) * max(n_dom - 1, 1), 1)
        return total, parts


def train_mode(encoder: EncoderNet) -> None:
    """Trainable part in train mode; the frozen trunk (and its BatchNorm statistics) stays in eval."""
    encoder.train()
    for m in encoder.frozen_modules():
        m.eval()


def build(cfg: TrainConfig, observer: Callable[[int, MinedPairs], None] | None = None) -> list[Stage]:
    """The run's stages in order, those with epochs > 0, each knowing its first global epoch."""
    stages: list[Stage] = [IdseStage(cfg.epochs_idse), CdsmStage(cfg.epochs_cdsm), PairStage(cfg.epochs_pairs, observer)]
    out, first = [], 0
    for s in stages:
        if s.epochs > 0:
            s.first_epoch = first
            first += s.epochs
            out.append(s)
    return out
