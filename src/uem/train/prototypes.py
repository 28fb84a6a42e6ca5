"""Prototypes of UEM stage 1 (IDSE) on memory-bank arrays: numpy, scipy, scikit-learn.

torch only where the trainer needs one epoch's result as tensors (`EpochPrototypes`, which imports
it when it runs), so the numpy side (export's PrototypeGraph) loads without it.

docs/method.md, "Prototypes" and "Unified prototypes": each domain is clustered with k-means (the number
of clusters estimated from the vectors alone, never given), B's prototypes are translated into A by the
difference of bank means, paired with A's by the Hungarian algorithm, and a pair is merged only when it
is closer than the merge threshold. Unmerged prototypes are concepts private to one domain; the merged
links (with the radius of the two clusters' members) are what the runtime's open-set rule uses.

The inputs are plain vectors (one row per image); nothing here knows what the images show.

Layout of a unified set, in the frame of domain X, paired with domain Y (see `PairMerge`):
rows [0, K_X) are X's own prototypes, each replaced by the average with its partner when merged;
rows [K_X, K_X + #unmerged Y) are Y's unmerged prototypes translated into X, in Y's order.
Every unified row is renormalised to unit length (features live on the unit sphere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from ..engine.geometry import pairwise_euclidean, pairwise_uem_distance, unit_rows
from ..engine.prototypes import PrototypeGraph

if TYPE_CHECKING:
    import torch

from .config import DEFAULT_MERGE_RULE, MERGE_RULES  # noqa: F401  (MERGE_RULES: re-exported)


# -- K and clustering ------------------------------------------------------------------------------
def k_grid(k_min: int, k_max: int, steps: int = 12) -> list[int]:
    """A coarse, roughly geometric grid of cluster counts from k_min to k_max (both included)."""
    if k_max <= k_min:
        return [k_min]
    grid = np.unique(np.round(np.geomspace(k_min, k_max, steps)).astype(int))
    return [int(k) for k in grid]


def knee(ks: list[int], inertia: list[float]) -> int:
    """Kneedle on a decreasing curve: the k furthest below the chord joining the ends.

    x is k, y the inertia, both scaled to [0, 1] (Kneedle, Satopaa et al. 2011). Not log k: measured
    on pretrained emoji embeddings the inertia is concave in log k, so a log axis always answers the
    smallest k. A curve with no point below the chord (no elbow at all) gives the smallest k.
    """
    if len(ks) < 3:
        return int(ks[0])
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertia, dtype=np.float64)
    x = (x - x[0]) / (x[-1] - x[0])
    span = y[0] - y[-1]
    if span <= 0:
        return int(ks[0])
    y = (y - y[-1]) / span            # 1 at k_min, 0 at k_max
    below_chord = (1.0 - x) - y       # the chord runs from (0, 1) to (1, 0)
    best = int(np.argmax(below_chord))
    return int(ks[best]) if below_chord[best] > 0 else int(ks[0])


def distinct_rows(x: np.ndarray) -> int:
    """How many different vectors there are (to 1e-6): k-means can never use more clusters than that."""
    return len(np.unique(np.round(np.asarray(x, dtype=np.float64), 6), axis=0))


def estimate_k(x: np.ndarray, k_min: int = 16, k_max: int = 256, seed: int = 2024,
               max_samples: int = 1500, steps: int = 12) -> int:
    """The number of clusters of one domain's vectors, without labels (docs/method.md: elbow method).

    Spherical k-means inertia over a coarse geometric grid of k on a seeded subsample, then the knee
    of the curve (`knee`). The range is clipped to the sample size. Never given a true class count:
    the default 16..256 only says "tens to a couple of hundred concepts per domain".
    """
    x = unit_rows(x, np.float64)
    rng = np.random.default_rng(seed)
    if len(x) > max_samples:
        x = x[rng.choice(len(x), max_samples, replace=False)]
    k_max = min(k_max, distinct_rows(x) - 1)
    k_min = max(1, min(k_min, k_max))
    ks = k_grid(k_min, k_max, steps)
    inertia = [KMeans(n_clusters=k, n_init=2, max_iter=100, random_state=seed).fit(x).inertia_ for k in ks]
    return knee(ks, inertia)


def cluster(x: np.ndarray, k: int, seed: int = 2024, n_init: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means: (centroids [k, D] unit length, assignments [N] = most similar centroid by cosine).

    k is capped at the number of distinct vectors, so the result may have fewer than k rows.

    k-means on the normalised vectors, centroids renormalised; assignments are recomputed by cosine to
    the unit centroids so they agree with the prototype NCE logits f·p (docs/method.md, L_PNCE).
    """
    x = unit_rows(x, np.float64)
    k = max(1, min(int(k), distinct_rows(x)))   # duplicate centroids would make the merge bar 0
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x)
    centroids = unit_rows(km.cluster_centers_, np.float64)
    assignments = np.argmax(x @ centroids.T, axis=1).astype(np.int64)
    return centroids.astype(np.float32), assignments


@dataclass
class DomainPrototypes:
    """One domain's clustering for an epoch: unit centroids [K, D], assignments [N], bank mean [D]."""

    centroids: np.ndarray
    assignments: np.ndarray
    mean: np.ndarray

    @property
    def k(self) -> int:
        return len(self.centroids)


def domain_prototypes(x: np.ndarray, k: int | None = None, seed: int = 2024,
                      k_min: int = 16, k_max: int = 256) -> DomainPrototypes:
    """Cluster one domain's bank (K estimated when None); the mean is taken over the unit rows."""
    x = unit_rows(x, np.float64)
    if k is None:
        k = estimate_k(x, k_min=k_min, k_max=k_max, seed=seed)
    centroids, assignments = cluster(x, k, seed)
    return DomainPrototypes(centroids, assignments, x.mean(0).astype(np.float32))


# -- translation, pairing, merging -----------------------------------------------------------------
def translate(protos_b: np.ndarray, mean_a: np.ndarray, mean_b: np.ndarray) -> np.ndarray:
    """B's prototypes in A's frame: p^{B->A} = p^B + (mean(M_A) - mean(M_B)) (docs/method.md)."""
    return np.asarray(protos_b, dtype=np.float64) + (np.asarray(mean_a, np.float64) - np.asarray(mean_b, np.float64))


def smallest_gap(protos: np.ndarray) -> np.ndarray:
    """For each prototype, the distance to the nearest OTHER prototype of the same domain (inf if alone)."""
    d = pairwise_euclidean(protos, protos)
    np.fill_diagonal(d, np.inf)
    return d.min(1)


@dataclass
class PairMatch:
    """One ordered pair source -> target, in the form the trainer uses.

    partner[i]: the target prototype Hungarian-paired with source prototype i (-1: none, K_s > K_t);
    merged[i]: whether that pair passed the merge rule;
    own_unified [U_s, D]: the unified set in the source frame (the set SEL pulls towards);
    target_unified [U_t, D]: the unified set in the target frame (SN2M's prototype candidates);
    tilde_index[i]: the row of target_unified that is p~ of source prototype i, i.e. i translated into
    the target (or the merged average when merged) — SN2M's prototype positive.
    """

    partner: np.ndarray
    merged: np.ndarray
    own_unified: np.ndarray
    target_unified: np.ndarray
    tilde_index: np.ndarray

    @property
    def p_tilde(self) -> np.ndarray:
        """[K_s, D] the translated, merge-checked prototype of each source prototype."""
        return self.target_unified[self.tilde_index]


@dataclass
class PairMerge:
    """The symmetric result of pairing domains A and B (see the module docstring for the set layout).

    pairs [M, 2]: Hungarian pairs (A index, B index), M = min(K_A, K_B); distance [M]: Euclidean
    distance between p^A and p^{B->A}; threshold [M]: the bar each pair had to pass; merged [M].
    unified_a / unified_b: the unified sets in A's / B's frame, unit rows.
    a_to_b [K_A]: row of unified_b holding p~ of each A prototype; b_to_a [K_B] symmetric.
    """

    pairs: np.ndarray
    distance: np.ndarray
    threshold: np.ndarray
    merged: np.ndarray
    unified_a: np.ndarray
    unified_b: np.ndarray
    a_to_b: np.ndarray
    b_to_a: np.ndarray

    @property
    def merged_pairs(self) -> np.ndarray:
        """[L, 2] the (A index, B index) pairs that merged."""
        return self.pairs[self.merged]

    def ordered(self, a_is_source: bool = True) -> PairMatch:
        """The view A -> B (or B -> A when `a_is_source` is False)."""
        src, dst = (0, 1) if a_is_source else (1, 0)
        k_src = len(self.a_to_b) if a_is_source else len(self.b_to_a)
        partner = np.full(k_src, -1, dtype=np.int64)
        merged = np.zeros(k_src, dtype=bool)
        partner[self.pairs[:, src]] = self.pairs[:, dst]
        merged[self.pairs[:, src]] = self.merged
        if a_is_source:
            return PairMatch(partner, merged, self.unified_a, self.unified_b, self.a_to_b)
        return PairMatch(partner, merged, self.unified_b, self.unified_a, self.b_to_a)


def _unified(own: np.ndarray, other_in_own: np.ndarray, own_idx: np.ndarray, other_idx: np.ndarray,
             merged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unified set in one frame, and for each `other` prototype the row holding its p~."""
    rows = np.array(own, dtype=np.float64)
    m_own, m_other = own_idx[merged], other_idx[merged]
    rows[m_own] = 0.5 * (rows[m_own] + other_in_own[m_other])
    is_merged_other = np.zeros(len(other_in_own), dtype=bool)
    is_merged_other[m_other] = True
    unmerged_other = np.flatnonzero(~is_merged_other)
    where = np.empty(len(other_in_own), dtype=np.int64)
    where[m_other] = m_own
    where[unmerged_other] = len(own) + np.arange(len(unmerged_other))
    unified = np.concatenate([rows, other_in_own[unmerged_other]], axis=0)
    return unit_rows(unified, np.float64).astype(np.float32), where


def pair_and_merge(protos_a: np.ndarray, protos_b: np.ndarray, mean_a: np.ndarray, mean_b: np.ndarray,
                   rule: str = DEFAULT_MERGE_RULE, merge: bool = True) -> PairMerge:
    """Hungarian pairing of A's prototypes with B's translated into A, and the merge rule.

    docs/method.md, merge bar: merge a pair (average it) only if its distance is below the smallest
    distance between two prototypes inside A and inside B. Reading implemented as rule="global":
      distance(i, j) = ||p^A_i - p^{B->A}_j||  (Euclidean, in A's frame; the cost of the assignment),
      threshold     = min( min_{i != i'} ||p^A_i - p^A_i'||,  min_{j != j'} ||p^B_j - p^B_j'|| ),
      merge (i, j)  iff distance(i, j) < threshold (strict).
    i.e. a matched pair merges only if it is closer than ANY two prototypes of the same domain. A domain
    with a single prototype sets no bar (inf). rule="local", the default (DEFAULT_MERGE_RULE in
    uem.train.config says why), is a looser per-pair bar: threshold(i, j) = min(gap_A(i), gap_B(j)), the
    distance from each of the two to its own nearest same-domain neighbour. merge=False pairs but
    merges nothing (the no-merge ablation).
    Pairing is rectangular when K_A != K_B: the surplus prototypes stay unpaired (thus unmerged).
    """
    if rule not in MERGE_RULES:
        raise ValueError(f"merge rule must be one of {MERGE_RULES}, not {rule!r}")
    pa = unit_rows(protos_a, np.float64)
    pb = unit_rows(protos_b, np.float64)
    b_in_a = translate(pb, mean_a, mean_b)
    a_in_b = translate(pa, mean_b, mean_a)
    cost = pairwise_euclidean(pa, b_in_a)
    rows, cols = linear_sum_assignment(cost)
    distance = cost[rows, cols]
    gap_a, gap_b = smallest_gap(pa), smallest_gap(pb)
    if rule == "global":
        threshold = np.full(len(rows), min(gap_a.min(initial=np.inf), gap_b.min(initial=np.inf)))
    else:
        threshold = np.minimum(gap_a[rows], gap_b[cols])
    merged = (distance < threshold) if merge else np.zeros(len(rows), dtype=bool)
    unified_a, b_to_a = _unified(pa, b_in_a, rows, cols, merged)
    unified_b, a_to_b = _unified(pb, a_in_b, cols, rows, merged)
    return PairMerge(np.stack([rows, cols], 1).astype(np.int64), distance, threshold, merged,
                     unified_a, unified_b, a_to_b, b_to_a)


def match_domains(protos: dict[str, DomainPrototypes], rule: str = DEFAULT_MERGE_RULE,
                  merge: bool = True) -> dict[tuple[str, str], PairMerge]:
    """`pair_and_merge` for every unordered pair of domains (docs/method.md: apply every rule pairwise),
    keyed (a, b) with a before b in the dict's order."""
    names = list(protos)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            out[(a, b)] = pair_and_merge(protos[a].centroids, protos[b].centroids,
                                         protos[a].mean, protos[b].mean, rule=rule, merge=merge)
    return out


def ordered_match(matches: dict[tuple[str, str], PairMerge], source: str, target: str) -> PairMatch:
    """The PairMatch source -> target out of `match_domains`' result, whichever order its key has."""
    if (source, target) in matches:
        return matches[(source, target)].ordered(True)
    return matches[(target, source)].ordered(False)


# -- open-set radius and the runtime graph ---------------------------------------------------------
def radius(members_a: np.ndarray, members_b: np.ndarray, block: int = 1024) -> float:
    """R_c = max D(x_A, x_B) over all members of the two merged clusters (docs/method.md, open-set
    rejection), computed block by block so large clusters do not build one huge matrix. 0 if empty."""
    members_a = np.asarray(members_a, dtype=np.float64)
    members_b = np.asarray(members_b, dtype=np.float64)
    if len(members_a) == 0 or len(members_b) == 0:
        return 0.0
    best = 0.0
    for i in range(0, len(members_a), block):
        for j in range(0, len(members_b), block):
            best = max(best, float(pairwise_uem_distance(members_a[i:i + block], members_b[j:j + block]).max()))
    return best


def graph_from(vectors: dict[str, np.ndarray], protos: dict[str, DomainPrototypes],
               matches: dict[tuple[str, str], PairMerge]) -> PrototypeGraph:
    """The runtime's PrototypeGraph from clusterings and matches already computed (e.g. by the trainer):
    every domain's own unit centroids, one link per merged pair with its members' radius."""
    names = list(protos)
    offsets = np.cumsum([0] + [protos[n].k for n in names])
    links, radii = [], []
    for (a, b), m in matches.items():
        ia, ib = names.index(a), names.index(b)
        xa, xb = unit_rows(vectors[a], np.float64), unit_rows(vectors[b], np.float64)
        for pa, pb in m.merged_pairs.tolist():
            links.append((offsets[ia] + pa, offsets[ib] + pb))
            radii.append(radius(xa[protos[a].assignments == pa], xb[protos[b].assignments == pb]))
    return PrototypeGraph(
        domains=names,
        centroids=np.concatenate([protos[n].centroids for n in names], axis=0),
        owner=np.concatenate([np.full(protos[n].k, i) for i, n in enumerate(names)]),
        links=np.asarray(links, dtype=np.int64).reshape(-1, 2),
        radius=np.asarray(radii, dtype=np.float32),
        domain_means=np.stack([protos[n].mean for n in names]),
    )


def build_prototype_graph(vectors: dict[str, np.ndarray], k: dict[str, int] | int | None = None,
                          seed: int = 2024, merge: bool = True, rule: str = DEFAULT_MERGE_RULE,
                          k_min: int = 16, k_max: int = 256) -> PrototypeGraph:
    """Cluster every domain (K estimated when None), pair and merge every pair of domains, and return
    the graph the bundle stores (docs/method.md, open-set rejection: re-cluster, translate, merge,
    radii). merge=False gives no links: every prototype private (the no-merge / UCDIR-style baseline)."""
    if len(vectors) < 1:
        raise ValueError("no domains")
    protos = {}
    for name, x in vectors.items():
        k_d = k.get(name) if isinstance(k, dict) else k
        protos[name] = domain_prototypes(x, k_d, seed=seed, k_min=k_min, k_max=k_max)
    return graph_from(vectors, protos, match_domains(protos, rule=rule, merge=merge))


# -- one epoch's prototypes as the trainer's tensors -------------------------------------------------
@dataclass
class EpochPrototypes:
    """Per-domain clusterings and per-pair matches of one epoch, as torch tensors on the device.

    Domains are numbered as the trainer's banks; (d, e) keys an ordered pair of domains. `protos` and
    `matches` (the numpy results) are present on the rank that computed them and empty on the ranks
    that received the tensors (`from_tensors`): the losses need only the tensors.
    """

    protos: dict[str, DomainPrototypes]
    matches: dict[tuple[str, str], PairMerge]
    centroids: list[torch.Tensor]            # [d] (K_d, D)
    assign: list[torch.Tensor]               # [d] (n_d,) bank slot -> own prototype
    own_unified: dict[tuple[int, int], torch.Tensor]     # (d, e): d's unified set paired with e
    target_unified: dict[tuple[int, int], torch.Tensor]  # (d, e): e's unified set paired with d
    tilde_index: dict[tuple[int, int], torch.Tensor]     # (d, e): row of target_unified for d's protos

    @classmethod
    def build(cls, banks: list[np.ndarray], domains: list[str], ks: list[int], seed: int,
              device: torch.device, rule: str = "global", merge: bool = True) -> "EpochPrototypes":
        """Cluster every domain's bank with its K, pair and merge every pair, and move the results
        to `device` (float32 rows, int64 indices)."""
        import torch

        protos = {name: domain_prototypes(banks[d], ks[d], seed=seed) for d, name in enumerate(domains)}
        matches = match_domains(protos, rule=rule, merge=merge)
        on_device = lambda a: torch.as_tensor(np.asarray(a)).to(device)  # noqa: E731
        own, target, tilde = {}, {}, {}
        for (a, b), m in matches.items():
            ia, ib = domains.index(a), domains.index(b)
            for src, dst, view in ((ia, ib, m.ordered(True)), (ib, ia, m.ordered(False))):
                own[src, dst] = on_device(view.own_unified).float()
                target[src, dst] = on_device(view.target_unified).float()
                tilde[src, dst] = on_device(view.tilde_index).long()
        return cls(protos, matches,
                   [on_device(protos[n].centroids).float() for n in domains],
                   [on_device(protos[n].assignments).long() for n in domains], own, target, tilde)

    def merged_count(self) -> int:
        return int(sum(m.merged.sum() for m in self.matches.values()))

    @staticmethod
    def _pairs(n_domains: int) -> list[tuple[int, int]]:
        return [(d, e) for d in range(n_domains) for e in range(n_domains) if d != e]

    def to_tensors(self) -> list[torch.Tensor]:
        """Every tensor in a fixed order (what `from_tensors` reads back), e.g. for a broadcast."""
        pairs = self._pairs(len(self.centroids))
        return [*self.centroids, *self.assign, *(self.own_unified[p] for p in pairs),
                *(self.target_unified[p] for p in pairs), *(self.tilde_index[p] for p in pairs)]

    @classmethod
    def from_tensors(cls, tensors: list[torch.Tensor], n_domains: int) -> "EpochPrototypes":
        """The tensors of `to_tensors` as EpochPrototypes again (without the numpy results)."""
        pairs = cls._pairs(n_domains)
        cut = np.cumsum([0, n_domains, n_domains, len(pairs), len(pairs), len(pairs)])
        own, target, tilde = (dict(zip(pairs, tensors[cut[i]:cut[i + 1]])) for i in (2, 3, 4))
        return cls({}, {}, list(tensors[cut[0]:cut[1]]), list(tensors[cut[1]:cut[2]]), own, target, tilde)
