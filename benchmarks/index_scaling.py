"""Index scaling: hnswlib vs numpy brute force at 10k / 100k / 1M synthetic embedding-like vectors
(benchmarks/RESULTS-archive.md, "Performance").

    .venv/bin/python benchmarks/index_scaling.py run --like out/perf/e512.uem --sizes 100000 \
        --json benchmarks/results/index_scaling_grid.json
    .venv/bin/python benchmarks/index_scaling.py run --data uniform --dim 512 --sizes 100000 \
        --json benchmarks/results/index_scaling_grid.json
    .venv/bin/python benchmarks/index_scaling.py plot --json benchmarks/results/index_scaling_grid.json \
        --png benchmarks/results/index_scaling_grid.png

`--like BUNDLE` draws clustered vectors at the bundle's width whose shape (effective dimension,
neighbour and random-pair cosines) is fitted to the bundle's largest domain
(uem.perf.synthetic.fit_spec); without it, `--data clustered` is the mixture fitted to the earlier
128-d model (index_scaling.json holds those rows).

`run` measures each size (uem.perf.scaling.measure: build time, RSS of the index loaded in a fresh process, recall@10
against exact numpy search over 1000 held-out queries, an ef_search sweep, single-query p50 of HNSW
and brute force interleaved on one thread) with the bundle's HNSW parameters (the exporter's
DEFAULT_HNSW unless overridden), merges the rows into the --json file (keyed by data, N, width and
HNSW parameters, so sizes can be run one per process: RSS deltas stay clean) and prints a table.
`plot` draws benchmarks/results/index_scaling.png from that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from uem.engine.atomic import replace_atomic, replacing
from uem.perf.measure import machine
from uem.perf.scaling import measure, spec_like

RESULTS = Path(__file__).parent / "results"
JSON = RESULTS / "index_scaling.json"
PNG = RESULTS / "index_scaling.png"
err = Console(stderr=True)


def _default_hnsw():
    from uem.export.config import DEFAULT_HNSW  # the parameters every exported bundle gets

    return DEFAULT_HNSW


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"rows": []}


def table(rows: list[dict]) -> str:
    head = ("| data | N | build s | vec/s | index RSS MB | recall@10 | HNSW p50 ms | p99 ms | "
            "brute p50 ms | speed-up | load avg |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in sorted(rows, key=lambda r: (r["data"], r["n"])):
        lines.append(
            f"| {r['data']} | {r['n']:,} | {r['build_s']:.1f} | {r['build_vectors_per_s']:.0f} | "
            f"{r['index_rss_mb']:.0f} | {r['recall_at_10']:.4f} | {r['hnsw_query']['p50_ms']:.3f} | "
            f"{r['hnsw_query']['p99_ms']:.3f} | {r['brute_force_query']['p50_ms']:.2f} | "
            f"{r['speedup_vs_brute_force']:.1f}x | {r['load_average_start'][0]}-{r['load_average_end'][0]} |")
    lines.append("\nef_search sweep (recall@10 / single-query p50 ms):\n")
    efs = sorted({int(e) for r in rows for e in r["ef_sweep"]})
    lines.append("| data | N | " + " | ".join(f"ef {e}" for e in efs) + " |")
    lines.append("|---|---|" + "---|" * len(efs))
    for r in sorted(rows, key=lambda r: (r["data"], r["n"])):
        cells = [f"{r['ef_sweep'][str(e)]['recall_at_10']:.4f} / {r['ef_sweep'][str(e)]['query']['p50_ms']:.3f}"
                 if str(e) in r["ef_sweep"] else "-" for e in efs]
        lines.append(f"| {r['data']} | {r['n']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _key(r: dict) -> tuple:
    return r["data"], r["n"], r.get("dim"), r["hnsw"]["M"], r["hnsw"]["ef_construction"]


def cmd_run(args) -> None:
    h = _default_hnsw()
    M = args.M or h.M
    efc = args.ef_construction or h.ef_construction
    ef = args.ef_search or h.ef_search
    doc = _load(args.json)
    spec, label, dim, shape = None, args.data, args.dim, None
    if args.like is not None:   # vectors shaped like a bundle's, at its width
        spec, dim, shape = spec_like(args.like)
        label = f"like-{dim}d"
        err.print(f"shaped like {args.like}: {spec} (real vs synthetic: {shape})")
    for n in args.sizes:
        with Progress(TextColumn(f"{args.data} N={n:,} build"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err) as bar:
            task = bar.add_task("build", total=n)
            row = measure(args.data, n, dim=dim, M=M, ef_construction=efc, ef_search=ef, spec=spec, label=label,
                          queries=args.queries, timed=args.timed, threads=args.threads, seed=args.seed,
                          progress=lambda done, total: bar.update(task, completed=done),
                          note=lambda m: bar.console.print(m))
        row["machine"] = machine()
        row["shape"] = shape
        row["command"] = " ".join([".venv/bin/python", "benchmarks/index_scaling.py", *sys.argv[1:]])
        doc["rows"] = [r for r in doc["rows"] if _key(r) != _key(row)] + [row]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        replace_atomic(args.json, json.dumps(doc, indent=1).encode())
        err.print(f"{label} N={n:,}: recall@10 {row['recall_at_10']:.4f}, HNSW p50 "
                  f"{row['hnsw_query']['p50_ms']:.3f} ms vs brute force {row['brute_force_query']['p50_ms']:.2f} ms "
                  f"({row['speedup_vs_brute_force']:.0f}x), build {row['build_s']:.1f} s, index RSS "
                  f"+{row['index_rss_mb']:.0f} MB -> {args.json}")
    print(table(doc["rows"]))


def cmd_plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _load(args.json)["rows"]
    if not rows:
        sys.exit(f"{args.json}: no rows yet (run `index_scaling.py run` first)")
    fig, ax = plt.subplots(1, 4, figsize=(19, 4.6))
    def series(r: dict) -> str:
        return f"{r['data']} M{r['hnsw']['M']}"

    kinds = sorted({series(r) for r in rows})
    for kind, marker in zip(kinds, "os^vD<>"):
        rs = sorted((r for r in rows if series(r) == kind), key=lambda r: r["n"])
        if not rs:
            continue
        n = [r["n"] for r in rs]
        ef = rs[0]["hnsw"]["ef_search"]
        ax[0].plot(n, [r["hnsw_query"]["p50_ms"] for r in rs], marker=marker, label=f"HNSW ef {ef}, {kind}")
        ax[0].plot(n, [r["brute_force_query"]["p50_ms"] for r in rs], marker=marker, ls="--",
                   label=f"numpy brute force, {kind}")
        ax[1].plot(n, [r["build_s"] for r in rs], marker=marker, label=kind)
        ax[2].plot(n, [r["index_rss_mb"] for r in rs], marker=marker, label=f"index RSS (loaded), {kind}")
        ax[2].plot(n, [r["vectors_bytes"] / 2**20 for r in rs], marker=marker, ls=":",
                   label=f"raw float32 vectors, {kind}")
        for r in rs:
            efs = sorted(int(e) for e in r["ef_sweep"])
            ax[3].plot([r["ef_sweep"][str(e)]["query"]["p50_ms"] for e in efs],
                       [r["ef_sweep"][str(e)]["recall_at_10"] for e in efs], marker=marker,
                       label=f"{kind} N={r['n']:,}")
    ax[0].set(xscale="log", yscale="log", xlabel="vectors in the domain", ylabel="single query p50, ms (1 thread)",
              title="query latency")
    ax[1].set(xscale="log", yscale="log", xlabel="vectors", ylabel="seconds", title="HNSW build time")
    ax[2].set(xscale="log", yscale="log", xlabel="vectors", ylabel="MB", title="memory")
    ax[3].set(xscale="log", xlabel="single query p50, ms", ylabel="recall@10",
              title="recall vs latency (ef_search sweep)")
    ax[3].axhline(0.98, color="grey", lw=0.8, ls="--")
    for a in ax:
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    h = rows[0]["hnsw"]
    dims = "/".join(str(d) for d in sorted({r["dim"] for r in rows}, reverse=True))
    fig.suptitle(f"hnswlib (ef_construction {h['ef_construction']}, {h['build_threads']} build threads) vs numpy "
                 f"brute force, {dims}-d unit vectors; 2-core VM", fontsize=10)
    fig.tight_layout()
    with replacing(args.png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    print(f"wrote {args.png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", choices=("clustered", "uniform"), default="clustered")
    r.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    r.add_argument("--dim", type=int, default=128)
    r.add_argument("--like", type=Path, default=None, help="BUNDLE: clustered vectors at the bundle's width, "
                   "the mixture fitted to its largest domain's stored vectors (uem.perf.synthetic.fit_spec)")
    r.add_argument("--queries", type=int, default=1000)
    r.add_argument("--timed", type=int, default=200)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--M", type=int, default=None)
    r.add_argument("--ef-construction", type=int, default=None)
    r.add_argument("--ef-search", type=int, default=None)
    r.add_argument("--json", type=Path, default=JSON)
    r.set_defaults(fn=cmd_run)
    p = sub.add_parser("plot")
    p.add_argument("--json", type=Path, default=JSON)
    p.add_argument("--png", type=Path, default=PNG)
    p.set_defaults(fn=cmd_plot)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
