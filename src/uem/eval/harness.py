"""Evaluate any embedding on DATA/<domain>/<category>/... for every ordered domain pair (numpy only).

`embed_fn(paths) -> float32 [N, D]` can be anything — the pretrained backbone, a trained torch
encoder, the ONNX engine — so the floor, training runs and exported bundles are scored by the same
code. Each domain is embedded once per call; the vectors are L2-normalised and compared by cosine.

Open-set rejection plugs in as `reject_fn(query_vectors, query_domain, target_domain, target_vectors)
-> (accepted bool [n], score float [n])`, where a higher score means "more likely private" (its AUROC
is reported). Vectors passed to it are the normalised ones, query rows in the order of the pair's
queries. Without a reject_fn the open-set numbers are left out (the retrieval numbers are still there).

Ranking plugs in as `score_fn(query_vectors, query_domain, target_domain, target_vectors) -> scores
[n_q, n_t]` (higher ranks first); default cosine. A bundle passes `uem.eval.engine_scores.pair_scores`
on its engine, so its alignment and CSLS ranking are what is scored.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from ..engine.errors import DataError
from ..engine.geometry import unit_rows
from .labels import DomainLabels, load_labels
from .metrics import mean_ignoring_nan, open_set_metrics, retrieval_metrics
from .protocols import split_categories

EmbedFn = Callable[[list[Path]], np.ndarray]
RejectFn = Callable[[np.ndarray, str, str, np.ndarray], tuple[np.ndarray, np.ndarray]]
ScoreFn = Callable[[np.ndarray, str, str, np.ndarray], np.ndarray]


def pair_name(query: str, target: str) -> str:
    return f"{query}->{target}"


def parse_pairs(pairs: Iterable | None, domains: Sequence[str]) -> list[tuple[str, str]]:
    """None -> every ordered pair of `domains`; else items like ("a", "b"), "a->b" or "a:b"."""
    if pairs is None:
        return list(itertools.permutations(sorted(domains), 2))
    out = []
    for p in pairs:
        if isinstance(p, str):
            sep = "->" if "->" in p else ":"
            parts = [s.strip() for s in p.split(sep)]
        else:
            parts = list(p)
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"a pair is 'query->target', got {p!r}")
        q, r = parts
        unknown = [d for d in (q, r) if d not in domains]
        if unknown:
            raise DataError(f"unknown domain(s) {', '.join(unknown)}; found: {', '.join(domains)}")
        if q == r:
            raise ValueError(f"a pair needs two different domains, got {p!r}")
        out.append((q, r))
    return out


def embed_domain(embed_fn: EmbedFn, labels: DomainLabels) -> np.ndarray:
    """Call embed_fn on one domain's paths and check what comes back."""
    v = np.asarray(embed_fn(list(labels.paths)))
    if v.ndim != 2 or v.shape[0] != len(labels):
        raise ValueError(f"embed_fn returned shape {v.shape} for {len(labels)} images of {labels.domain!r}; "
                         "expected [N, D]")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"embed_fn returned NaN or infinity for domain {labels.domain!r}")
    return unit_rows(v)


def _num(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _rel(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _examples(scores, q: DomainLabels, r: DomainLabels, root: Path, n: int, k: int, seed: int,
              private: np.ndarray, accepted, rej_score) -> list[dict]:
    """A few seeded queries with their top-k hits, for the retrieval sheets of the report."""
    if n <= 0 or scores.shape[0] == 0 or scores.shape[1] == 0:
        return []
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(scores.shape[0], size=min(n, scores.shape[0]), replace=False).tolist())
    if private.any() and not private[pick].any():  # show at least one query that has no match
        pick[-1] = int(rng.choice(np.flatnonzero(private)))
    out = []
    for i in pick:
        top = np.argsort(-scores[i], kind="stable")[:k]
        out.append({
            "query": _rel(q.paths[i], root), "category": str(q.categories[i]),
            "identity": str(q.identities[i]), "private": bool(private[i]),
            "accepted": None if accepted is None else bool(accepted[i]),
            "rejection_score": None if rej_score is None else _num(rej_score[i]),
            "hits": [{"path": _rel(r.paths[j], root), "score": _num(scores[i, j]),
                      "same_category": bool(r.categories[j] == q.categories[i]),
                      "same_identity": bool(r.identities[j] == q.identities[i])} for j in top],
        })
    return out


def evaluate_pair(qv: np.ndarray, q: DomainLabels, rv: np.ndarray, r: DomainLabels, *,
                  protocol: str = "close", seed: int = 0, ks: Sequence[int] = (1, 5, 10),
                  reject_fn: RejectFn | None = None, root: Path | None = None, n_examples: int = 6,
                  keep_scores: bool = True, score_fn: ScoreFn | None = None) -> dict:
    """Metrics of one ordered pair from already-embedded (normalised) domains."""
    root = (root or Path(".")).resolve()
    split = split_categories(q.categories, r.categories, protocol, seed)
    qm, rm = split.query_mask(q.categories), split.retrieval_mask(r.categories)
    q, r, qv, rv = q.subset(qm), r.subset(rm), qv[qm], rv[rm]
    t0 = time.perf_counter()
    scores = qv @ rv.T if score_fn is None else np.asarray(score_fn(qv, q.domain, r.domain, rv))
    if scores.shape != (len(qv), len(rv)):
        raise ValueError(f"score_fn returned {scores.shape}, expected {(len(qv), len(rv))}")
    m = retrieval_metrics(scores, q.categories, r.categories, q.identities, r.identities, ks)
    private = ~np.isin(q.categories, np.unique(r.categories))
    res = {
        "query": q.domain, "target": r.domain, "pair": pair_name(q.domain, r.domain),
        "n_queries": len(q), "n_retrieval": len(r),
        "n_scored": m["n_scored"], "n_identity": m["n_identity"], "n_private": int(private.sum()),
        "n_query_categories": len(split.query), "n_retrieval_categories": len(split.retrieval),
        "top1_identity": _num(m["top1_identity"]), "map": _num(m["map"]),
        "map_class_balanced": _num(m["map_class_balanced"]),
        "p_at_k": {str(k): _num(v) for k, v in m["p_at_k"].items()},
        "split": split.to_dict(), "open_set": None,
    }
    accepted = rej = None
    if reject_fn is not None:
        accepted, rej = reject_fn(qv, q.domain, r.domain, rv)
        accepted = np.asarray(accepted, dtype=bool).reshape(-1)
        rej = np.asarray(rej, dtype=np.float64).reshape(-1)
        if accepted.shape != (len(q),) or rej.shape != (len(q),):
            raise ValueError(f"reject_fn must return (accepted [n], score [n]) for n={len(q)} queries, "
                             f"got {accepted.shape} and {rej.shape}")
        os_m = open_set_metrics(accepted, rej, private)
        res["open_set"] = {key: (_num(v) if isinstance(v, float) else v) for key, v in os_m.items()}
        if keep_scores:
            res["open_set"]["scores"] = [round(float(s), 6) for s in rej]
            res["open_set"]["private"] = private.astype(int).tolist()
    res["examples"] = _examples(scores, q, r, root, n_examples, max(ks), seed, private, accepted, rej)
    res["seconds_metrics"] = round(time.perf_counter() - t0, 3)
    return res


def split_images(data_dir: str | Path, query: str, target: str, protocol: str = "close", seed: int = 0,
                 labels_csv: str | Path | None = None) -> dict[str, list[Path]]:
    """{query: [paths], target: [paths]} the protocol keeps for one pair — what transductive training
    of that split may see. Labels are read here, so the trainer gets bare image lists and never labels."""
    labels = load_labels(data_dir, [query, target], labels_csv)
    q, r = labels[query], labels[target]
    split = split_categories(q.categories, r.categories, protocol, seed)
    return {query: q.subset(split.query_mask(q.categories)).paths,
            target: r.subset(split.retrieval_mask(r.categories)).paths}


def _summary(pairs: list[dict]) -> dict:
    keys = ["top1_identity", "map", "map_class_balanced"]
    out = {f"mean_{k}": _num(mean_ignoring_nan([p[k] if p[k] is not None else np.nan for p in pairs]))
           for k in keys}
    os_pairs = [p["open_set"] for p in pairs if p["open_set"]]
    for k in ["private_detection", "known_acceptance", "h_score", "auroc"]:
        if os_pairs:
            out[f"mean_{k}"] = _num(mean_ignoring_nan([p[k] if p[k] is not None else np.nan for p in os_pairs]))
    return out


QUERIES = ("clean", "wild")


def _wild_results(embed_fn: EmbedFn, all_labels: dict[str, DomainLabels], vectors: dict[str, np.ndarray],
                  pair_list: list[tuple[str, str]], root: Path, wild_dir: Path | None, seed: int,
                  log: Callable[[str], None] | None, **pair_kw) -> dict:
    """Every pair again with wild copies of its queries (wild.py) against the gallery as indexed:
    {variant: {"pairs": [...], "summary": {...}}}."""
    import tempfile

    from .wild import VARIANTS, VERSION, check_available, write_wild_copies

    check_available()
    tmp = tempfile.TemporaryDirectory(prefix="uem-wild-") if wild_dir is None else None
    folder = Path(tmp.name) if tmp else Path(wild_dir)
    out = {}
    try:
        for variant in VARIANTS:
            wild_labels, wild_vectors = {}, {}
            for d in sorted({q for q, _ in pair_list}):
                lab = all_labels[d]
                if log:
                    log(f"wild queries ({variant}): {len(lab)} {d} pictures")
                paths = write_wild_copies(lab.paths, root, folder, variant, seed)
                wild_labels[d] = DomainLabels(d, paths, lab.categories, lab.identities)
                wild_vectors[d] = embed_domain(embed_fn, wild_labels[d])
            pairs = []
            for qd, rd in pair_list:
                res = evaluate_pair(wild_vectors[qd], wild_labels[qd], vectors[rd], all_labels[rd],
                                    seed=seed, root=root, **pair_kw)
                if log:
                    log(f"{res['pair']} ({variant}): top-1 {res['top1_identity']}, mAP {res['map']}")
                pairs.append(res)
            out[variant] = {"pairs": pairs, "summary": _summary(pairs)}
    finally:
        if tmp:
            tmp.cleanup()
    out["version"] = VERSION
    return out


def wild_blocks(results: dict) -> dict[str, dict]:
    """The wild variants of `evaluate`'s results ({variant: {"pairs", "summary"}}), without the
    version the wild section records beside them; empty for clean-only results."""
    return {v: b for v, b in (results.get("wild") or {}).items() if isinstance(b, dict)}


def evaluate(embed_fn: EmbedFn, data_dir: str | Path, pairs: Iterable | None = None,
             protocol: str = "close", seed: int = 0, k: int | Sequence[int] = (1, 5, 10),
             reject_fn: RejectFn | None = None, labels_csv: str | Path | None = None,
             n_examples: int = 6, keep_scores: bool = True,
             log: Callable[[str], None] | None = None, score_fn: ScoreFn | None = None,
             queries: str = "clean", wild_dir: str | Path | None = None) -> dict:
    """Score `embed_fn` on every requested ordered domain pair; returns a JSON-able dict.

    Per pair: top-1 identity, mAP@All (mean over queries whose category exists in the target),
    class-balanced mAP, P@k, counts, the category split, a few retrieval examples, and — with a
    reject_fn — private detection, known acceptance, H-score and AUROC (+ per-query scores).
    `queries="wild"` adds results["wild"]: every pair again with the queries re-framed as a user's
    pictures are (eval/wild.py), each variant's copies kept under `wild_dir` (else a temporary one).
    """
    if queries not in QUERIES:
        raise ValueError(f"queries must be one of {', '.join(QUERIES)}, got {queries!r}")
    ks = [int(k)] if isinstance(k, (int, np.integer)) else [int(x) for x in k]
    root = Path(data_dir).resolve()
    all_labels = load_labels(root, labels_csv=labels_csv)
    pair_list = parse_pairs(pairs, list(all_labels))
    needed = sorted({d for p in pair_list for d in p})
    vectors, embed_seconds = {}, {}
    for d in needed:
        if log:
            log(f"embedding {d}: {len(all_labels[d])} images")
        t0 = time.perf_counter()
        vectors[d] = embed_domain(embed_fn, all_labels[d])
        embed_seconds[d] = round(time.perf_counter() - t0, 2)
    dims = {int(v.shape[1]) for v in vectors.values()}
    if len(dims) != 1:
        raise ValueError(f"embed_fn returned different dimensions per domain: {sorted(dims)}")
    results = []
    for qd, rd in pair_list:
        res = evaluate_pair(vectors[qd], all_labels[qd], vectors[rd], all_labels[rd], protocol=protocol,
                            seed=seed, ks=ks, reject_fn=reject_fn, root=root, n_examples=n_examples,
                            keep_scores=keep_scores, score_fn=score_fn)
        if log:
            log(f"{res['pair']}: top-1 {res['top1_identity']}, mAP {res['map']}")
        results.append(res)
    wild = None
    if queries == "wild":
        wild = _wild_results(embed_fn, all_labels, vectors, pair_list, root, wild_dir, seed, log,
                             protocol=protocol, ks=ks, reject_fn=reject_fn, n_examples=n_examples,
                             keep_scores=keep_scores, score_fn=score_fn)
    return {
        "data_dir": str(root), "protocol": protocol, "seed": int(seed), "k": ks,
        "labels": str(labels_csv) if labels_csv else "folders",
        "domains": {d: {"images": len(lab), "categories": int(len(np.unique(lab.categories)))}
                    for d, lab in all_labels.items() if d in needed},
        "embedding_dim": dims.pop(), "seconds_embed": embed_seconds,
        "pairs": results, "summary": _summary(results), "queries": queries, "wild": wild,
    }
