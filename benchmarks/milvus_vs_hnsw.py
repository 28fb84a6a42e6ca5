"""Milvus backend vs hnswlib: same answers on a real bundle, speed and recall on a 100k domain.

    # 1. parity on emoji3: an hnswlib bundle and the same run exported with --to (same vectors)
    .venv/bin/python benchmarks/milvus_vs_hnsw.py parity HNSW_BUNDLE MILVUS_BUNDLE
    # 2. a synthetic 100k-vector domain (clustered unit vectors, 128-d), exact ground truth by numpy
    .venv/bin/python benchmarks/milvus_vs_hnsw.py scale --uri /tmp/x/bench.db --n 100000

`parity`: every vector of every other domain queries every target domain through both engines
(Engine.query_batch(vectors=...), k=10, the source domain given): top-10 overlap, identical top-10 lists,
identical accept/reject decisions, max |score difference|. When both bundles hold byte-identical
vectors (checked by sha256) the comparison isolates the index.

`scale`: the same vectors in an hnswlib index (DomainIndex.build, the export's DEFAULT_HNSW) and in a
Milvus collection (MilvusStore, HNSW/IP with the same M/efConstruction/ef); single-query latency
measured interleaved (same load for both), batched throughput, recall@10 against numpy's exact top-10.
Results go to benchmarks/results/milvus_vs_hnsw_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from uem.perf.measure import interleaved, load_average, summary
from uem.perf.synthetic import clustered, exact_topk, recall_at_k
from uem.engine import Engine
from uem.engine.bundle import read_bundle

RESULTS = Path(__file__).parent / "results"


def parity(hnsw_bundle: Path, milvus_bundle: Path, k: int = 10) -> dict:
    hi, mi = read_bundle(hnsw_bundle), read_bundle(milvus_bundle)
    if hi.backend is not None or mi.backend is None:
        sys.exit("parity: give an hnswlib bundle first, then a Milvus-backed one")
    same = {d: hi.domains[d].vectors.sha256 == mi.domains[d].vectors.sha256 for d in hi.domains}
    out = {"hnsw_bundle": str(hnsw_bundle), "milvus_bundle": str(milvus_bundle),
           "milvus_uri": mi.backend["uri"], "milvus_index": mi.backend["index"], "hnsw": hi.hnsw.to_dict(),
           "identical_vectors": same, "k": k, "targets": {}}
    with Engine.open(hnsw_bundle, threads=1) as h, Engine.open(milvus_bundle, threads=1) as m:
        for target in hi.domains:
            n = overlap = lists = decisions = accepted = rec_h = rec_m = 0
            score_diff = 0.0
            ids = np.array([it["id"] for it in mi.domains[target].items])
            tv = mi.load_vectors(target, mmap=False)
            for source in hi.domains:
                if source == target:
                    continue
                q = mi.load_vectors(source, mmap=False)
                exact = ids[exact_topk(tv, q, k)]
                rh = h.query_batch(vectors=q, domain=target, k=k, source=source, no_reject=True)
                rm = m.query_batch(vectors=q, domain=target, k=k, source=source, no_reject=True)
                for a, b, ex in zip(rh, rm, exact):
                    ia, ib = [x.id for x in a.hits], [x.id for x in b.hits]
                    rec_h += len(set(ia) & set(ex)) / k
                    rec_m += len(set(ib) & set(ex)) / k
                    overlap += len(set(ia) & set(ib)) / k
                    lists += ia == ib
                    decisions += a.accepted == b.accepted
                    accepted += a.accepted
                    score_diff = max(score_diff, abs(a.score - b.score))
                    n += 1
            out["targets"][target] = {"queries": n, "top10_overlap": overlap / n, "identical_top10": lists / n,
                                      "same_decision": decisions / n, "accepted_rate_hnsw": accepted / n,
                                      "recall10_hnsw": rec_h / n, "recall10_milvus": rec_m / n,
                                      "max_openset_score_diff": score_diff}
            print(target, json.dumps(out["targets"][target]), flush=True)
        # one query vector at a time through the whole engine path (search + open-set decision)
        target, source = list(hi.domains)[0], list(hi.domains)[-1]
        q = mi.load_vectors(source, mmap=False)
        i = iter(range(10 ** 9))
        ms = interleaved({"hnswlib": lambda: h.query(vector=q[next(i) % len(q)], domain=target, k=k, source=source),
                          "milvus": lambda: m.query(vector=q[next(i) % len(q)], domain=target, k=k, source=source)},
                         200)
        out["engine_query_vector"] = {"target": target, "source": source, "load": load_average(),
                                      **{b: summary(v) for b, v in ms.items()}}
    return out


def scale(uri: str, n: int, dim: int, queries: int, iters: int, seed: int, like: Path | None = None) -> dict:
    from uem.engine.index import DomainIndex
    from uem.engine.milvus import MilvusDomain, MilvusIndex, index_record
    from uem.export.config import DEFAULT_HNSW as H
    from uem.perf.scaling import spec_like
    from uem.perf.synthetic import ClusterSpec

    spec = ClusterSpec()
    if like is not None:   # shaped like this bundle's largest domain, at its width
        spec, dim, _ = spec_like(like)
    both = clustered(n + queries, dim, seed=seed, spec=spec)   # queries: fresh draws from the same mixture
    data, qs = np.ascontiguousarray(both[:n]), np.ascontiguousarray(both[n:])
    t = time.perf_counter()
    truth = exact_topk(data, qs, 10)
    out = {"n": n, "dim": dim, "queries": queries, "iters": iters, "seed": seed, "hnsw": H.to_dict(),
           "cluster_spec": spec.to_dict(), "like": None if like is None else str(like),
           "load_before": load_average(), "exact_topk_s": time.perf_counter() - t}

    t = time.perf_counter()
    hidx = DomainIndex.build(data, space=H.space, M=H.M, ef_construction=H.ef_construction,
                             ef_search=H.ef_search, seed=H.seed, threads=2)
    out["hnsw_build_s"] = time.perf_counter() - t

    ext = MilvusIndex(uri)
    items = [{"id": str(i), "path": f"synthetic/{i}"} for i in range(n)]
    coll = f"uem_bench_{seed}_{n}_synthetic"
    ext.store.drop([coll])
    t = time.perf_counter()
    ext.store.create(coll, dim, index_record(H))
    ext.store.upsert(coll, data, 0, items, fresh=True)
    out["milvus_insert_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ext.store.finish_bulk(coll)
    out["milvus_flush_index_s"] = time.perf_counter() - t
    mdom = MilvusDomain(ext.store, coll, n, dim, H.ef_search)

    for ef in sorted({10, 32, H.ef_search}):  # Milvus needs ef >= k: 10 is the lowest legal value
        hidx._index.set_ef(ef)
        found_h, _ = hidx.search(qs, 10)
        found_m, _ = MilvusDomain(ext.store, coll, n, dim, ef).search(qs, 10)
        out.setdefault("by_ef", {})[ef] = {
            "recall10_hnsw": recall_at_k(found_h, truth), "recall10_milvus": recall_at_k(found_m, truth),
            "top10_overlap_milvus_vs_hnsw": float(np.mean([len(set(a) & set(b)) / 10 for a, b in
                                                           zip(found_h.tolist(), found_m.tolist())]))}
        print("ef", ef, out["by_ef"][ef], flush=True)
    hidx._index.set_ef(H.ef_search)
    cycle = iter(range(10 ** 9))
    ms = interleaved({"hnswlib": lambda: hidx.search(qs[next(cycle) % queries][None], 10),
                      "milvus": lambda: mdom.search(qs[next(cycle) % queries][None], 10)}, iters)
    out["single_query"] = {k: summary(v) for k, v in ms.items()}
    # the first search of a snapshot is Strong (it waits for the server's time tick): a fresh view each time
    strong = interleaved({"milvus": lambda: MilvusDomain(ext.store, coll, n, dim, H.ef_search).search(
        qs[next(cycle) % queries][None], 10)}, max(10, iters // 5))
    out["single_query_strong"] = {k: summary(v) for k, v in strong.items()}
    for name, fn in (("hnswlib", lambda: hidx.search(qs, 10)), ("milvus", lambda: mdom.search(qs, 10))):
        t = time.perf_counter()
        fn()
        out.setdefault("batch_qps", {})[name] = queries / (time.perf_counter() - t)
    out["load_after"] = load_average()
    ext.store.drop([coll])
    ext.close()
    return out


def _server_version(where) -> str | None:
    """The Milvus the answers came from (a server's version string; None for Milvus Lite files)."""
    uri = str(read_bundle(where).backend.get("uri", "")) if isinstance(where, Path) else str(where)
    if not uri.startswith(("milvus://", "http://", "https://")):
        return None
    from pymilvus import MilvusClient

    client = MilvusClient(uri="http://" + uri.split("://", 1)[1])
    try:
        return client.get_server_version()
    finally:
        client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("parity")
    p.add_argument("hnsw_bundle", type=Path)
    p.add_argument("milvus_bundle", type=Path)
    s = sub.add_parser("scale")
    s.add_argument("--uri", required=True, help="milvus://HOST:PORT or a Milvus Lite .db path")
    s.add_argument("--n", type=int, default=100_000)
    s.add_argument("--dim", type=int, default=128)
    s.add_argument("--queries", type=int, default=200)
    s.add_argument("--iters", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--like", type=Path, default=None, help="BUNDLE: vectors at its width, shaped like its "
                   "largest domain (uem.perf.synthetic.fit_spec)")
    for sp in (p, s):
        sp.add_argument("--out", type=Path, default=None, help="result file (default "
                        "benchmarks/results/milvus_vs_hnsw_<mode>.json)")
    a = ap.parse_args()
    res = parity(a.hnsw_bundle, a.milvus_bundle) if a.mode == "parity" else \
        scale(a.uri, a.n, a.dim, a.queries, a.iters, a.seed, a.like)
    RESULTS.mkdir(exist_ok=True)
    path = a.out or RESULTS / f"milvus_vs_hnsw_{a.mode}.json"
    res["server_version"] = _server_version(a.milvus_bundle if a.mode == "parity" else a.uri)
    path.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "targets"}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
