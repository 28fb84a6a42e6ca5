"""One query's path through an engine snapshot: source, alignment, search, CSLS, decision.

Why apart from `Engine`: the engine module owns the snapshot's life (open, reload, add, threads);
this one is the pure function of a snapshot that every query runs — infer or take the source domain,
align the query in its source's space, map it into the target's, search the target's index, re-rank
the candidates by CSLS where the bundle stores its statistics, and ask the bundle's open-set rule
(uem.engine.openset) for the decision with the evidence that rule needs. Nothing here mutates.

`Snapshot` is also the engine's public read-only view (`Engine.snapshot()`): a caller that must
report which state answered (the server: generation and count) or score whole sets exactly as a
query would (`uem.eval`) takes one snapshot and uses only it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .backend import Backends, DomainBackend
from .bundle.reader import BundleInfo
from .csls import candidate_csls
from .encoder import Encoder
from .errors import UnknownDomainError
from .geometry import unit_rows
from .openset import Decision, OpenSetRule
from .preprocess import ImageSource, preprocess_batch


@dataclass(frozen=True)
class Hit:
    id: str
    path: str
    score: float  # cosine similarity in the aligned space, higher is closer
    rank_score: float | None = None  # the CSLS score the hits are ordered by (None: by cosine)


@dataclass(frozen=True)
class QueryResult:
    accepted: bool
    reason: str
    score: float          # open-set score, higher = more likely no match (the rule's scale: openset)
    hits: list[Hit]
    source: str | None    # the query's domain (given, or inferred from the prototypes)
    domain: str = ""      # the target domain searched

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DomainState:
    """Immutable searchable state of one domain."""

    name: str
    index: DomainBackend       # hnswlib DomainIndex or milvus.MilvusDomain (backend.py)
    items: list[dict]
    index_key: str             # equal across snapshots: the index object is reused

    @property
    def count(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class Snapshot:
    """One consistent engine state; replaced as a whole, never mutated. Read it, never change it."""

    info: BundleInfo           # the verified manifest: generation, preprocess spec, alignment, ...
    encoder: Encoder
    rule: OpenSetRule
    states: dict[str, DomainState]
    backends: Backends

    @property
    def path(self) -> Path:
        return self.info.root

    @property
    def generation(self) -> int:
        """The bundle generation this state is (grows with every committed write)."""
        return self.info.generation

    def count(self, domain: str) -> int:
        return domain_state(self, domain).count

    def check(self, domain: str, source: str | None = None) -> None:
        """Raise UnknownDomainError now for a bad target or source (before any image is read)."""
        domain_state(self, domain)
        check_source(self, source)

    def embed(self, images: Iterable[ImageSource]) -> np.ndarray:
        """Images -> unit float32 (N, D). Raises ImageError on the first bad image."""
        return self.encoder.embed(preprocess_batch(images, self.info.preprocess))

    def query_batch(self, images: Sequence[ImageSource] | None = None, domain: str | None = None,
                    k: int = 10, source: str | None = None, no_reject: bool = False, *,
                    vectors: np.ndarray | None = None) -> list[QueryResult]:
        """`Engine.query_batch` on this state alone."""
        if domain is None:
            raise TypeError("query_batch needs the target domain")
        if (images is None) == (vectors is None):
            raise TypeError("query_batch takes images or vectors, exactly one of them")
        if images is not None:
            self.check(domain, source)
            vectors = self.embed(images)
        return search_snapshot(self, vectors, domain, k, source, no_reject)

    def decisions(self, vectors: np.ndarray, domain: str, source: str | None = None) -> list[Decision]:
        """Only the open-set decision for embeddings (N, D): does each one's concept exist in
        `domain`? (What a query decides, without building hits; the query benchmark times it.)"""
        self.check(domain, source)
        vecs = query_rows(vectors, self.info.embed_dim)
        out: list[Decision | None] = [None] * len(vecs)
        for src, rows, own_q, q in by_source(self, vecs, source, domain):
            labels, sims = domain_state(self, domain).index.search(q, max(1, self.rule.target_k))
            for i, d in zip(rows, decide(self, own_q, domain, labels, sims, src)):
                out[i] = d
        return out  # type: ignore[return-value]



def domain_state(snap: Snapshot, domain: str) -> DomainState:
    try:
        return snap.states[domain]
    except KeyError:
        raise UnknownDomainError(domain, list(snap.states)) from None


def check_source(snap: Snapshot, source: str | None) -> None:
    known = snap.rule.graph.domains
    if source is not None and source not in snap.states and source not in known:
        raise UnknownDomainError(source, sorted(set(snap.states) | set(known)))


def query_rows(vecs: np.ndarray, dim: int) -> np.ndarray:
    """Query vectors checked (finite, (N, dim)) and made unit rows (an all-zero row stays zero)."""
    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[1] != dim or not np.all(np.isfinite(vecs)):
        raise ValueError(f"query vectors must be finite (N, {dim}), got {vecs.shape}")
    return unit_rows(vecs)


def _sources(snap: Snapshot, vecs: np.ndarray, source: str | None) -> list[str | None]:
    """The given source for every query, or each one's inferred domain: from the alignment's
    per-domain Gaussians when the bundle has them, else from the nearest prototype."""
    if source is not None:
        return [source] * len(vecs)
    if snap.info.alignment.domains:
        return snap.info.alignment.infer_source(vecs)
    return [snap.rule.infer_source(q) for q in vecs]


def by_source(snap: Snapshot, vecs: np.ndarray, source: str | None, target: str):
    """Queries grouped by source: (source, rows, aligned in the source's space, in the target's)."""
    sources = _sources(snap, vecs, source)
    al = snap.info.alignment
    for src in dict.fromkeys(sources):
        rows = [i for i, s in enumerate(sources) if s == src]
        own_q = al.align(vecs[rows], src)
        yield src, rows, own_q, al.to_target(own_q, src, target)


def csls_on(snap: Snapshot, source: str | None, target: str) -> bool:
    order = snap.info.csls_order
    return (snap.info.alignment.csls.enabled and source is not None and source != target
            and source in order and target in order)


def _rank(snap: Snapshot, source: str | None, target: str, labels: np.ndarray,
          sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """HNSW candidates (best cosine first) -> (labels, cosines, CSLS or None), in ranking order."""
    if not csls_on(snap, source, target):
        return labels, sims, None
    col = snap.info.csls_order.index(source)
    stats = snap.info.domains[target].csls
    valid = labels >= 0
    score = candidate_csls(sims, stats[np.clip(labels, 0, None), col], snap.info.alignment.csls.k, valid)
    order = np.argsort(-score, axis=1, kind="stable")
    pick = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return pick(labels), pick(sims), pick(score)


def search_snapshot(snap: Snapshot, vecs: np.ndarray, domain: str, k: int, source: str | None,
                    no_reject: bool) -> list[QueryResult]:
    """Top-k in `domain` + the open-set decision, all from one snapshot."""
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    state = domain_state(snap, domain)
    check_source(snap, source)
    vecs = query_rows(vecs, snap.info.embed_dim)
    out: list[QueryResult | None] = [None] * len(vecs)
    for src, rows, own_q, q in by_source(snap, vecs, source, domain):
        # CSLS re-ranks `candidates` hits, but only where it applies to this (source, target)
        n = max(int(k), snap.rule.target_k,
                snap.info.alignment.csls.candidates if csls_on(snap, src, domain) else 1)
        labels, sims = state.index.search(q, n)
        decisions = decide(snap, own_q, domain, labels, sims, src)
        ranked_labels, ranked_sims, ranked = _rank(snap, src, domain, labels, sims)
        for r, i in enumerate(rows):
            d, hits = decisions[r], []
            if d.accepted or no_reject:  # label -1: a backend answered with fewer than k hits
                lab, sim = ranked_labels[r, :k].tolist(), ranked_sims[r, :k].tolist()
                rs = [None] * len(lab) if ranked is None else ranked[r, :k].tolist()
                hits = [_hit(state.items[j], c, z) for j, c, z in zip(lab, sim, rs) if j >= 0]
            out[i] = QueryResult(d.accepted, d.reason, float(d.score), hits, d.source, domain)
    return out  # type: ignore[return-value]


def _hit(row: dict, cos: float, rank_score: float | None) -> Hit:
    """One hit from its item row (read once: an ItemList parses the row at every read)."""
    return Hit(row["id"], row["path"], float(cos), None if rank_score is None else float(rank_score))


def decide(snap: Snapshot, own_q: np.ndarray, target: str, labels: np.ndarray, sims: np.ndarray,
            source: str | None) -> list[Decision]:
    """The open-set decision for queries of one source, from their target hits (best cosine
    first) and, where the pair's rule asks for them (`own_k`), their own-domain neighbours.
    `own_q`: the queries aligned in their source's space (where its prototypes and index live)."""
    rule = snap.rule
    own = _own_neighbours(snap, own_q, source, target)
    out = []
    for i, (q, lab, sim) in enumerate(zip(own_q, labels, sims)):
        found = lab >= 0
        out.append(rule.decide(q, target, float(sim[0]) if len(sim) and lab[0] >= 0 else None, source,
                               target_sims=sim[found],
                               own_sims=None if own is None else own[i]))
    return out


def own_domain_search(snap: Snapshot, domain: str, vecs: np.ndarray, n: int) -> np.ndarray:
    """Cosines of `vecs`' n nearest items in `domain`, best first; NaN where fewer were found."""
    lab, sims = domain_state(snap, domain).index.search(vecs, n)
    sims = np.where(lab >= 0, sims, np.nan).astype(np.float64)
    if sims.shape[1] < n:
        sims = np.pad(sims, ((0, 0), (0, n - sims.shape[1])), constant_values=np.nan)
    return sims


def _own_neighbours(snap: Snapshot, own_q: np.ndarray, source: str | None,
                    target: str) -> np.ndarray | None:
    """The queries' own-domain neighbour cosines when their pair's rule needs them (None: not)."""
    n = snap.rule.own_k(source, target)
    if source is None or source not in snap.states or not n:
        return None
    return own_domain_search(snap, source, own_q, n)
