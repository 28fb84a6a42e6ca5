"""`uemctl query` — find an image's matches in another domain, or say that none exist there."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import typer

from ..engine import Engine, QueryResult
from ..engine.errors import ImageError, UemError
from ..engine.preprocess import PreprocessSpec, preprocess
from ..engine.search import Snapshot
from .backend import backend_options
from .inputs import BUNDLE_HELP, chosen_bundle, iter_images, printable
from .progress import progress_bars
from .root import app, err, out

BATCH = 32


def _chunks(spec: PreprocessSpec, images: Iterator[Path]) -> Iterator[list[tuple[Path, np.ndarray | None, str | None]]]:
    """Preprocess in chunks of BATCH: (path, tensor or None, error or None)."""
    chunk = []
    for p in images:
        try:
            chunk.append((p, preprocess(p, spec), None))
        except ImageError as e:
            chunk.append((p, None, str(e)))
        if len(chunk) == BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _results(snap: Snapshot, images: Iterator[Path], domain: str, k: int, source: str | None,
             no_reject: bool) -> Iterator[tuple[Path, QueryResult | None, str | None]]:
    """Every image's answer from one engine state; a bad image gets its error, the others run."""
    for chunk in _chunks(snap.info.preprocess, images):
        good = [x for _, x, _ in chunk if x is not None]
        results = iter(snap.query_batch(vectors=snap.encoder.embed(np.stack(good)), domain=domain, k=k,
                                        source=source, no_reject=no_reject) if good else [])
        for p, x, error in chunk:
            yield p, (next(results) if x is not None else None), error


def _result_json(path: Path, r: QueryResult | None, error: str | None) -> dict:
    if r is None:
        return {"query": printable(path), "error": printable(error or "")}
    d = r.to_dict()
    for h in d["hits"]:
        h["id"], h["path"] = printable(h["id"]), printable(h["path"])
    return {"query": printable(path), **d}


def _print_text(path: Path, r: QueryResult) -> None:
    verdict = "accepted" if r.accepted else "REJECTED"
    src = f"from {r.source}, " if r.source else ""
    out.print(f"{printable(path)} -> {r.domain}: {verdict} ({src}score {r.score:.3g}): {r.reason}",
              markup=False)
    for i, h in enumerate(r.hits, 1):
        out.print(f"  {i:>3}. {h.score:.4f}  {printable(h.path)}", markup=False)


@app.command("query")
def query(
    images: list[Path] = typer.Argument(..., help="Query images and/or directories (searched recursively, streamed).",
                                        show_default=False),
    domain: str = typer.Option(..., "--domain", "-d", help="Domain to search in."),
    k: int = typer.Option(10, "-k", "--top-k", min=1, help="Hits per query (clamped to the domain size)."),
    as_json: bool = typer.Option(False, "--json", help="Write one JSON document to stdout."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Also write a contact-sheet PNG here.",
                                         dir_okay=False),
    no_reject: bool = typer.Option(False, "--no-reject", help="Return hits even when the query is rejected."),
    source: Optional[str] = typer.Option(None, "--from", help="The queries' domain (default: inferred from the prototypes)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help=BUNDLE_HELP, show_default=False),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Encoder threads (default: all cores)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="hnswlib or milvus (default: what the "
                                          "bundle was exported for)."),
    uri: Optional[str] = typer.Option(None, "--uri", help="Milvus to query instead of the one the bundle "
                                      "records (milvus://HOST:PORT or a Milvus Lite .db path)."),
) -> None:
    """Search DOMAIN for each image's matches; reject when its concept does not exist there.

    Results go to stdout, notes and errors to stderr.

    A bad image is reported on one line, the others still run, and the exit code is 2.
    """
    eng = Engine.open(chosen_bundle(bundle), threads=threads, **backend_options(backend, uri))
    snap = eng.snapshot()
    snap.check(domain, source)
    rows, failures, count = [], 0, 0
    from ..engine.sheet import MAX_ROWS, SheetRow, write_sheet

    if as_json:
        sys.stdout.write(json.dumps({"bundle": printable(snap.path), "domain": domain, "k": k})[:-1]
                         + ', "results": [')
    with progress_bars() as progress:
        task = progress.add_task("querying", total=None)
        for path, r, error in _results(snap, iter_images(images), domain, k, source, no_reject):
            if as_json:
                sys.stdout.write(("\n" if count == 0 else ",\n") + json.dumps(_result_json(path, r, error)))
            if r is None:
                failures += 1
                err.print(f"uemctl: error: {printable(error or '')}", markup=False)
            else:
                if not as_json:
                    _print_text(path, r)
                if sheet is not None and len(rows) < MAX_ROWS:
                    rows.append(SheetRow(path, printable(path.name), r))
            count += 1
            progress.update(task, description=f"querying: {count} images")
    if as_json:
        sys.stdout.write(f"\n], \"errors\": {failures}}}\n")
        sys.stdout.flush()
    if count == 0:
        raise UemError("no images found in " + ", ".join(printable(p) for p in images))
    if sheet is not None and rows:
        write_sheet(rows, sheet, k=k)
        err.print(f"contact sheet: {printable(sheet)}"
                  + (f" (first {MAX_ROWS} queries)" if count - failures > MAX_ROWS else ""), markup=False)
    if failures:
        raise typer.Exit(2)
