"""`uemctl index add | move | realign` — extend a bundle, move its indexes, refit its alignment (atomic)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..engine import Engine
from ..engine.bundle import DEFAULT_LOCK_TIMEOUT_S
from ..engine.errors import ImageError, UemError
from .backend import backend_options
from .inputs import iter_images, printable
from .progress import per_domain, progress_bars
from .root import err, index_app, out


@index_app.command("add")
def add(
    bundle: Path = typer.Argument(..., help="Bundle directory to extend."),
    sources: list[Path] = typer.Argument(..., help="Images and/or directories (searched recursively).",
                                         show_default=False),
    domain: str = typer.Option(..., "--domain", "-d", help="Existing domain to add to."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable images (one warning each) "
                                  "instead of adding nothing."),
    lock_timeout: float = typer.Option(DEFAULT_LOCK_TIMEOUT_S, "--lock-timeout", min=0,
                                       help="Seconds to wait while another process writes the bundle."),
    uri: Optional[str] = typer.Option(None, "--uri", help="For a bundle served from Milvus: the Milvus to "
                                      "write to instead of the one the bundle records."),
) -> None:
    """Embed images and append them to DOMAIN's index, vectors and items (crash-safe).

    A bundle served from Milvus gets the rows in its collection (the one it was exported to).

    Images already in the domain (same absolute path) are skipped, so re-running is harmless.
    """
    eng = Engine.open(bundle, **backend_options(None, uri))
    eng.snapshot().check(domain)
    paths = list(iter_images(sources))
    if not paths:
        raise UemError("no images found in " + ", ".join(printable(p) for p in sources))
    skipped = 0

    def skip(_image, e: ImageError) -> None:
        nonlocal skipped
        skipped += 1
        err.print(f"uemctl: warning: skipped {printable(str(e))}", markup=False)

    before = eng.count(domain)
    with progress_bars() as progress:
        task = progress.add_task("embedding", total=len(paths))
        try:
            added = eng.add(domain, paths, lock_timeout=lock_timeout, on_bad=skip if skip_bad else None,
                            progress=lambda done, _total: progress.update(task, completed=done))
        except ImageError as e:
            raise ImageError(f"{e} (nothing was added; --skip-bad skips such files)") from None
    if skipped == len(paths):
        raise UemError("none of the images could be read; nothing was added")
    out.print(f"added {added} images to {domain} ({before} -> {eng.count(domain)}); "
              f"{len(paths) - skipped - added} already present, {skipped} skipped", markup=False)


@index_app.command("move")
def move(
    bundle: Path = typer.Argument(..., help="Bundle directory whose indexes to move."),
    to: str = typer.Option(..., "--to", help="milvus://HOST:PORT or a Milvus Lite file path ending in .db "
                           "(needs uem[milvus]); 'hnswlib' moves them back into the bundle."),
    lock_timeout: float = typer.Option(DEFAULT_LOCK_TIMEOUT_S, "--lock-timeout", min=0,
                                       help="Seconds to wait while another process writes the bundle."),
) -> None:
    """Serve an existing bundle's domains from Milvus (or from hnswlib again), without re-exporting.

    The bundle keeps every domain's vectors and items, so nothing is re-embedded; the commit is
    atomic and the collections the bundle used before are dropped afterwards.
    """
    from ..engine.bundle import reindex_bundle

    external = None
    with progress_bars() as progress:
        if to != "hnswlib":
            backend_options("milvus", to)  # one-line error for a malformed address
            from ..engine.milvus import MilvusIndex

            external = MilvusIndex(to, progress=per_domain(progress, "Milvus"))
        else:
            progress.add_task("building hnswlib indexes", total=None)
        try:
            info = reindex_bundle(bundle, external, lock_timeout=lock_timeout)
        finally:
            if external is not None:
                external.close()
    if info.backend:
        cols = ", ".join(f"{d} -> {c}" for d, c in info.backend["collections"].items())
        out.print(f"{bundle}: served from Milvus at {info.backend['uri']} ({cols})", markup=False)
    else:
        out.print(f"{bundle}: served from hnswlib indexes in the bundle "
                  f"({', '.join(info.domains)})", markup=False)


@index_app.command("realign")
def realign(
    bundle: Path = typer.Argument(..., help="Bundle directory to realign."),
    align: Optional[str] = typer.Option(None, "--align", help="Per-domain alignment: whiten (mean + shrunk ZCA), "
                                        "mean, or none. Unset options keep what the bundle uses."),
    shrinkage: Optional[float] = typer.Option(None, "--shrinkage", help="Whitening shrinkage, times each domain's mean eigenvalue."),
    maps: Optional[bool] = typer.Option(None, "--maps/--no-maps", help="Self-learned cross-domain maps."),
    csls_k: Optional[int] = typer.Option(None, "--csls-k", help="CSLS neighbours (0: rank by cosine)."),
    csls_candidates: Optional[int] = typer.Option(None, "--csls-candidates", help="Index hits re-ranked by CSLS per query."),
    lock_timeout: float = typer.Option(DEFAULT_LOCK_TIMEOUT_S, "--lock-timeout", min=0,
                                       help="Seconds to wait while another process writes the bundle."),
) -> None:
    """Refit the alignment, prototypes and open-set thresholds from the bundle's stored vectors.

    Items added since export were aligned with the transform fitted then; run this after a domain
    grew a lot, or to switch alignment, without re-embedding anything. Atomic like any write.
    Needs the training extras (pip install 'uem[train]') for the prototypes' k-means.
    """
    try:
        from ..export.realign import realign_bundle
    except ImportError as e:
        raise UemError(f"realign needs the training extras (pip install 'uem[train]'): {e}") from None
    given = {"kind": align, "shrinkage": shrinkage, "maps": maps, "csls_k": csls_k, "csls_candidates": csls_candidates}
    with progress_bars() as progress:
        progress.add_task("refitting alignment, prototypes and thresholds; rebuilding indexes", total=None)
        try:
            r = realign_bundle(bundle, changes={k: v for k, v in given.items() if v is not None},
                               lock_timeout=lock_timeout)
        except ValueError as e:
            raise UemError(str(e)) from None
    a = r["alignment"]
    out.print(f"{bundle}: realigned ({a['kind']}, {len(a['maps'])} maps, CSLS k {a['csls']['k']}); "
              f"{r['prototypes']} prototypes, {r['links']} links; {r['seconds']} s", markup=False)
