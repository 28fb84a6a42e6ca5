"""The engine's ranking and "no match" decision as the harness's hooks (`score_fn`, `reject_fn`).

Why here and not on `Engine`: only evaluation scores whole sets at once; a user queries. These
read one engine state (`Engine.snapshot()`) and score exactly as `Engine.query` ranks and decides:
`pair_scores` is what `uemctl eval` ranks by, `reject_fn` what it counts as a rejection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from ..engine.align import pair_score_matrix
from ..engine.geometry import top_n
from ..engine.openset import OpenSetRule
from ..engine.search import csls_on, own_domain_search, query_rows

if TYPE_CHECKING:
    from ..engine import Engine

# own_search(domain, vectors, n) -> cosines [len(vectors), <= n], best first
OwnSearch = Callable[[str, np.ndarray, int], np.ndarray]


def pair_scores(engine: "Engine", query_vectors: np.ndarray, query_domain: str, target_domain: str,
                target_vectors: np.ndarray) -> np.ndarray:
    """The ranking scores of every query against every target item (N_q, N_t), exactly as
    `query` ranks its candidates: aligned cosine, or CSLS where the bundle uses it. CSLS
    statistics come from the two given sets themselves, as an index holding exactly these
    items stores them (what `uemctl eval` scores). As the harness's score_fn:
    `functools.partial(pair_scores, engine)`."""
    snap = engine.snapshot()
    return pair_score_matrix(snap.info.alignment, query_rows(query_vectors, snap.info.embed_dim), query_domain,
                             target_domain, np.asarray(target_vectors, np.float32),
                             csls=csls_on(snap, query_domain, target_domain))


def reject_fn(engine: "Engine"):
    """The engine's open-set rule as the harness's reject_fn, with own-domain neighbours from the
    engine's indexes, exactly as `query` decides (what `uemctl eval` scores)."""
    snap = engine.snapshot()

    def own_search(domain: str, vecs: np.ndarray, n: int) -> np.ndarray:
        if domain not in snap.states:
            return np.full((len(vecs), n), np.nan)
        return own_domain_search(snap, domain, np.asarray(vecs, np.float32), n)

    rule_reject = rule_reject_fn(snap.rule, own_search)
    al = snap.info.alignment

    def reject(query_vectors, query_domain, target_domain, target_vectors):
        own_q = al.align(query_rows(query_vectors, snap.info.embed_dim), query_domain)
        q = al.to_target(own_q, query_domain, target_domain)
        t = al.align(np.asarray(target_vectors, np.float32), target_domain)
        return rule_reject(q, query_domain, target_domain, t, own_q)

    return reject


def rule_reject_fn(rule: OpenSetRule, own_search: OwnSearch | None = None):
    """`rule` as the harness's reject_fn(query_vectors, query_domain, target_domain,
    target_vectors) -> (accepted bool [n], score float [n]), with exact target neighbours.

    `own_search` finds the queries' own-domain neighbours (`reject_fn` passes the engine's
    indexes); without it, pairs whose rule needs them fall back to the prototype rule. An optional
    fifth argument, `own_vectors`: the queries in their own domain's space (for prototypes and
    own-domain neighbours) when the first is already in the target's space (the engine's
    alignment)."""

    def reject(query_vectors, query_domain, target_domain, target_vectors, own_vectors=None):
        q = np.asarray(query_vectors, np.float32)
        own_q = q if own_vectors is None else np.asarray(own_vectors, np.float32)
        t = np.asarray(target_vectors, np.float32)
        sims = q @ t.T if len(t) and len(q) else np.zeros((len(q), 0), np.float32)
        nearest = sims.max(axis=1) if sims.shape[1] else [None] * len(q)
        own = tgt = [None] * len(q)
        if sims.shape[1]:
            tgt = top_n(sims, rule.target_k)[1]
        n_own = rule.own_k(query_domain, target_domain)
        if own_search is not None and n_own and len(q):
            own = own_search(query_domain, own_q, n_own)
        ds = [rule.decide(v, target_domain, None if c is None else float(c), query_domain,
                          target_sims=ts, own_sims=os_)
              for v, c, ts, os_ in zip(own_q, nearest, tgt, own)]
        return (np.array([d.accepted for d in ds], dtype=bool),
                np.array([d.score for d in ds], dtype=np.float64))

    return reject
