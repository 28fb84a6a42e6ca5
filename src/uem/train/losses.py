"""Losses of UEM (torch): IDSE's IPM and SEL, CDSM's SPR, SN2M and the adversarial domain loss.

Each function cites the docs/method.md rule it implements. Features `f` are the encoder outputs
(unit length); banks and prototypes are plain tensors without gradient. Searches (nearest prototype,
nearest neighbour) run under no_grad: they choose the targets, the loss then moves `f`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TAU = 0.07
_EPS = 1e-12


# -- schedule and memory bank ----------------------------------------------------------------------
def alpha(e: float, total: float) -> float:
    """alpha = 1 / (1 + exp(0.5 E - e)): prototype terms fade in as clusters become meaningful
    (docs/method.md, Mixing). E = total epochs, e = the current one."""
    return 1.0 / (1.0 + math.exp(0.5 * total - e))


@torch.no_grad()
def update_bank(bank: torch.Tensor, idx: torch.Tensor, f: torch.Tensor, momentum: float = 0.99) -> None:
    """In place: m_i <- normalise(0.99 m_i + 0.01 f(x_i)) (docs/method.md, memory bank)."""
    bank[idx] = F.normalize(momentum * bank[idx] + (1.0 - momentum) * f.detach().to(bank.dtype), dim=1)


# -- distances -------------------------------------------------------------------------------------
# Torch twins of uem.engine.geometry (the numpy definitions the runtime and the prototype builder use):
# the same formulas on tensors, differentiable, with the distance clamped for a finite gradient.
# tests/test_geometry.py checks that each agrees with its numpy original on random inputs.
def pairwise_euclidean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m] Euclidean distances (mirrors geometry.pairwise_euclidean) with a gradient that stays
    finite at 0 (the squared distance is clamped at 1e-12 before the square root, so d(x, x) = 1e-6
    and its gradient is 0, never NaN)."""
    sq = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return torch.sqrt(sq.clamp_min(_EPS))


def pairwise_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T


def pairwise_d_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[n, m] matrix of D(a_i, b_j) = (1 - cos) * ||a_i - b_j||; mirrors geometry.pairwise_uem_distance."""
    return (1.0 - pairwise_cosine(a, b)) * pairwise_euclidean(a, b)


# -- stage 1: IDSE ---------------------------------------------------------------------------------
def instance_nce(f: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """L_INCE = -log(exp(f·m_idx/tau) / sum_j exp(f·m_j/tau)); the whole same-domain bank is the
    denominator (docs/method.md, Instance NCE)."""
    return F.cross_entropy(f @ bank.T / tau, idx)


def proto_nce(f: torch.Tensor, protos: torch.Tensor, assign: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """L_PNCE = -log(exp(f·p_c(i)/tau) / sum_c exp(f·p_c/tau)) over the domain's own prototypes."""
    return F.cross_entropy(f @ protos.T / tau, assign)


def ipm(f: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, protos: torch.Tensor, assign: torch.Tensor,
        weight: float, tau: float = TAU, terms: dict[str, float] | None = None) -> torch.Tensor:
    """L_IPM = L_INCE + alpha * L_PNCE (docs/method.md, Mixing); `weight` is alpha(e, E).

    `terms`, when given, gets each term's value added under "ince" and "pnce": the IDSE stage logs
    them apart, and computing them here keeps the stage from writing the sum out a second time."""
    ince = instance_nce(f, bank, idx, tau)
    pnce = proto_nce(f, protos, assign, tau)
    if terms is not None:
        terms["ince"] = terms.get("ince", 0.0) + ince.item()
        terms["pnce"] = terms.get("pnce", 0.0) + pnce.item()
    return ince + weight * pnce


def sel(f: torch.Tensor, protos: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """L_SEL = mean_i sum_c softmax_c(f_i·p_c/tau) * ||f_i - p_c|| over the unified (merged) set:
    pulls each sample towards the prototypes it already resembles (docs/method.md, SEL)."""
    weights = torch.softmax(f @ protos.T / tau, dim=1)
    return (weights * pairwise_euclidean(f, protos)).sum(1).mean()


# -- stage 2: CDSM ---------------------------------------------------------------------------------
def spr(f: torch.Tensor, f_frozen: torch.Tensor) -> torch.Tensor:
    """L_SPR = mean_{i,j} (cos(f_i,f_j) - cos(f'_i,f'_j))^2 + (d(f_i,f_j) - d(f'_i,f'_j))^2: in-batch
    geometry kept equal to the frozen stage-1 encoder f' (docs/method.md, SPDA). 0 when f == f'.
    The diagonal (d = 0) goes through the clamped distance, so backward stays finite."""
    f_frozen = f_frozen.detach()
    dcos = pairwise_cosine(f, f) - pairwise_cosine(f_frozen, f_frozen)
    ddist = pairwise_euclidean(f, f) - pairwise_euclidean(f_frozen, f_frozen)
    return (dcos ** 2 + ddist ** 2).mean()


@torch.no_grad()
def sn2m_targets(f_a: torch.Tensor, protos_a: torch.Tensor, tilde_index: torch.Tensor,
                 unified_b: torch.Tensor, bank_b: torch.Tensor, plain_nn: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The searches of SN2M, all with D: (p~ row in unified_b, nearest B bank entry, trusted) per sample.

    own  = nearest own prototype p_A of x_i among protos_a;
    p~   = tilde_index[own]: the row of B's unified set holding p_A translated into B (or its merged
           average when p_A merged) — see uem.train.prototypes.PairMatch;
    nn   = the nearest B bank entry x_nn;
    trusted iff x_nn's nearest row of B's unified set IS p~ ("both prototypes agree"); always with
    plain_nn (the ablation "plain nearest-neighbour search").
    """
    own = pairwise_d_distance(f_a, protos_a).argmin(1)
    p_tilde = tilde_index[own]
    nn_idx = pairwise_d_distance(f_a, bank_b).argmin(1)
    nn_proto = pairwise_d_distance(bank_b[nn_idx], unified_b).argmin(1)
    trusted = torch.ones_like(own, dtype=torch.bool) if plain_nn else nn_proto == p_tilde
    return p_tilde, nn_idx, trusted


def sn2m(f_a: torch.Tensor, protos_a: torch.Tensor, tilde_index: torch.Tensor, unified_b: torch.Tensor,
         bank_b: torch.Tensor, tau: float = TAU, plain_nn: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """L_SN2M for samples of A against domain B (docs/method.md, SN2M); returns (loss, trusted mask).

    Candidates: every row of B's unified prototype set, then every B bank entry. Positives: p~, plus
    x_nn when trusted (`sn2m_targets`). L = mean_i -log( sum_pos exp(f·c/tau) / sum_all exp(f·c/tau) ).
    """
    p_tilde, nn_idx, trusted = sn2m_targets(f_a, protos_a, tilde_index, unified_b, bank_b, plain_nn)
    logits = f_a @ torch.cat([unified_b, bank_b], 0).T / tau
    positive = torch.zeros_like(logits, dtype=torch.bool)
    rows = torch.arange(len(f_a))
    positive[rows, p_tilde] = True
    positive[rows[trusted], len(unified_b) + nn_idx[trusted]] = True
    pos = torch.logsumexp(logits.masked_fill(~positive, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean(), trusted


# -- adversarial domain alignment ------------------------------------------------------------------
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """Identity forward, gradient times -lambda backward: the encoder learns to fool the classifier."""
    return _GradReverse.apply(x, lambda_)


class DomainClassifier(nn.Module):
    """The 2-layer domain classifier g of SPDA (docs/method.md): embedding -> domain logits."""

    def __init__(self, dim: int, n_domains: int = 2, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_domains))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)


def domain_adversarial_loss(f: torch.Tensor, domain_ids: torch.Tensor, classifier: DomainClassifier,
                            lambda_: float = 1.0) -> torch.Tensor:
    """L_DAL: cross-entropy of the classifier on which domain each sample came from, through gradient
    reversal — minimising it trains g to tell domains apart and f to make them indistinguishable.
    Cross-entropy over n_domains logits equals the binary case for 2 domains and extends to more."""
    return F.cross_entropy(classifier(grad_reverse(f, lambda_)), domain_ids)


# -- stage 3: mined pairs (uem.train.stages.PairStage) ---------------------------------------------
def whiten_rows(f: torch.Tensor, mean: torch.Tensor, whitener: torch.Tensor) -> torch.Tensor:
    """f centred and whitened with one domain's fixed (mean, whitener), unit length: the space the
    bundle is searched in (uem.engine.align); gradients flow through f only."""
    return F.normalize((f - mean) @ whitener, dim=1)


def pair_nce(anchor: torch.Tensor, targets: torch.Tensor, partner: torch.Tensor, tau: float) -> torch.Tensor:
    """Mined-pair contrast: -log(exp(a·t_p/tau) / sum_j exp(a·t_j/tau)) over the rows whose partner
    p is >= 0, the whole target domain the denominator; rows without a partner count 0 (the mean is
    over all rows, so a batch with few pairs pulls little). 0 when no row has a partner."""
    has = partner >= 0
    if not bool(has.any()):
        return anchor.new_zeros(())
    ce = F.cross_entropy(anchor[has] @ targets.T / tau, partner[has], reduction="sum")
    return ce / len(partner)
