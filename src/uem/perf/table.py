"""The human-readable form of a bench report: rich tables, one per section, plus the verdicts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .encoder import INT8


def _f(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def render(report: dict, console: Console) -> None:
    """Print the report; redirected output gets a wide console so tables keep one row per line."""
    if not console.is_terminal:
        console = Console(file=console.file, width=max(console.width, 160), highlight=False,
                          soft_wrap=True)
    m = report["machine"]
    console.print(f"bundle {report['bundle']}  ({'quick' if report['quick'] else 'full'} run)\n"
                  f"machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, load average "
                  f"{m['load_average']} at start, {report['load_average_end']} at end; onnxruntime "
                  f"{m['onnxruntime']}, numpy {m['numpy']}, {m['time_utc']}", markup=False)
    _encoder(report["encoder"], console)
    _query(report["query"], console)
    _footprint(report["footprint"], console)
    t = Table(title="Edge-deployment targets", title_justify="left")
    for c in ("target", "value", "wanted", "met", "on CPU time", "met (CPU time)", "note"):
        t.add_column(c)
    verdict = {True: "yes", False: "NO", None: "n/a"}
    for x in report["targets"]:
        v, c = x["value"], x.get("value_cpu")
        t.add_row(x["name"], "-" if v is None else f"{v:.4g}", x["target"], verdict[x["met"]],
                  "-" if c is None else f"{c:.4g}", "-" if c is None else verdict[x["met_cpu"]], x["note"])
    console.print(t)


def _encoder(e: dict, console: Console) -> None:
    b = e["batch"]
    t = Table(title=f"Encoder ({e['input_size']} px; {e['input']})", title_justify="left")
    for c in ("encoder", "file MB", "b1 1-thread p50 ms", "p99 ms", "int8 speed-up", "CPU p50 ms",
              "speed-up (CPU)", f"b{b} all-threads img/s", "note"):
        t.add_column(c)
    base = e["columns"][INT8].get("batch1_1thread", {}).get("p50_ms")
    base_cpu = e["columns"][INT8].get("batch1_1thread_cpu", {}).get("p50_ms")
    for name, col in e["columns"].items():
        b1 = col.get("batch1_1thread", {})
        c1 = col.get("batch1_1thread_cpu", {})
        bn = col.get(f"batch{b}_all_threads", {})
        sp = (b1["p50_ms"] / base) if b1 and base else None
        spc = (c1["p50_ms"] / base_cpu) if c1 and base_cpu else None
        t.add_row(name, _f(col.get("file_bytes", 0) / 1e6 if col.get("file_bytes") else None),
                  _f(b1.get("p50_ms")), _f(b1.get("p99_ms")), "-" if sp is None else f"{sp:.2f}x",
                  _f(c1.get("p50_ms")), "-" if spc is None else f"{spc:.2f}x",
                  _f(bn.get("images_per_s"), ".0f"), "" if col.get("available") and
                  not col.get("note", "").startswith("skipped") else col.get("note", ""))
    console.print(t)
    p = e["parity"]
    if "cos_mean" in p:
        console.print(f"int8 vs fp32 on {p['images']} images: cos mean {p['cos_mean']:.4f}, min "
                      f"{p['cos_min']:.4f}; top-10 overlap {p['top10_overlap']:.3f} "
                      f"({p['overlap_definition']})", markup=False)
    else:
        console.print(f"int8 vs fp32: {p['note']}", markup=False)


def _query(q: dict, console: Console) -> None:
    if "note" in q:
        console.print(f"end-to-end query: {q['note']}", markup=False)
        return
    e, ec = q["end_to_end"], q["end_to_end_cpu"]
    t = Table(title=f"End-to-end Engine.query, 1 thread ({q['rounds']} rounds over "
                    f"{q['distinct_images']} {q['source']} images -> {q['target']}, top-{q['k']}): "
                    f"p50 {e['p50_ms']:.2f} ms, p99 {e['p99_ms']:.2f} ms; CPU time p50 "
                    f"{ec['p50_ms']:.2f} ms, p99 {ec['p99_ms']:.2f} ms", title_justify="left")
    for c in ("stage", "p50 ms", "p99 ms", "CPU p50 ms", "share", "what"):
        t.add_column(c)
    for name, s in q["stages"].items():
        share = "" if name == "reject only" else f"{100 * s['share_of_stage_sum']:.0f} %"
        t.add_row(name, _f(s["p50_ms"], ".3f"), _f(s["p99_ms"], ".3f"), _f(s["cpu"]["p50_ms"], ".3f"),
                  share, s["what"])
    console.print(t)
    console.print(f"stage p50s sum to {q['stage_p50_sum_ms']:.2f} ms; decode + preprocess "
                  f"{100 * q['decode_and_preprocess_share']:.0f} %; accepted "
                  f"{100 * q['accepted_fraction']:.0f} % of queries", markup=False)
    vs = q.get("versus", {})
    if vs.get("end_to_end_vs_encoder") is not None:
        line = (f"end to end = {vs['end_to_end_vs_encoder']:.2f}x the int8 encoder alone "
                f"({vs['encoder_alone_p50_ms']:.2f} ms)")
        if "reference_p50_ms" in vs:
            line += (f"; {vs['end_to_end_vs_reference']:.2f}x the plain fp32 network "
                     f"({vs['reference_p50_ms']:.2f} ms; the encoder alone {vs['encoder_vs_reference']:.2f}x)")
        console.print(line, markup=False)


def _footprint(f: dict, console: Console) -> None:
    t = Table(title=f"Engine footprint (fresh process per probe; domain {f['domain']})",
              title_justify="left")
    for c in ("bundle", "items", "import s", "Engine.open s", "open CPU s", "first query s",
              "RSS import MB", "RSS open MB", "RSS query MB", "peak MB"):
        t.add_column(c)
    for name, p in (("as is", f["as_is"]), ("grown", f.get("grown"))):
        if p is None:
            continue
        t.add_row(name, str(p["items"]), _f(p["import_s"], ".3f"), _f(p["open_s"], ".3f"),
                  _f(p.get("open_cpu_s"), ".3f"),
                  _f(p["first_query_s"], ".3f"), _f(p.get("rss_after_import_mb"), ".0f"),
                  _f(p.get("rss_after_open_mb"), ".0f"), _f(p.get("rss_after_query_mb"), ".0f"),
                  _f(p.get("peak_rss_mb"), ".0f"))
    console.print(t)
    if "rss_per_added_item_bytes" in f:
        console.print(f"RSS per added item: {f['rss_per_added_item_bytes']:.0f} B "
                      f"({f['rss_per_item_vs_vectors_and_links']:.2f}x its vector + level-0 links, "
                      f"{f['vectors_and_links_bytes']} B); files of the grown "
                      f"domain: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in
                                              f["grown"]["file_bytes"].items()), markup=False)
