"""Build the phosphor4 benchmark set: <out>/<weight>/<category>/<icon>.png plus <out>/phosphor4.json.

One icon family, Phosphor (MIT), in four of its weights, each a domain:

| domain    | what it looks like                                   |
|-----------|------------------------------------------------------|
| `thin`    | hairline outlines (stroke 4 on the 256 grid)         |
| `bold`    | heavy outlines (stroke 24)                           |
| `fill`    | solid black shapes, details cut out in white         |
| `duotone` | regular outlines (stroke 16) over a 20 % grey fill   |

The SVGs and the metadata come from the PyPI package `py-phosphor-icons` (its "flat" style: every
weight drawn as filled paths). Identity = the icon's name (`airplane-tilt`), the same in every
domain. Category = the icon's `figma_category` in the package's metadata.json, slugged
('Weather & Nature' -> 'weather-nature'): Phosphor's own one category per icon. Its `categories`
list is no use for this: it is sorted alphabetically, so "the first one" would just be the
alphabetically first (acorn: Finance before Nature). Where `figma_category` is missing the first
of `categories` is used; an icon with neither is left out.

Framing keeps the family's design grid instead of cropping to the drawn content (as emoji3 does):
the whole 256x256 viewBox is rendered at 112x112 with resvg-py and centred on a 128x128 white RGB
canvas, so an 8 px margin surrounds every icon and a small glyph (the dot of `wifi-none`) stays small
instead of being blown up into a disc. Same packages, same bytes.

Nothing is held out by default (the benchmark protocols drop categories at evaluation time): the
set is every icon that has all four weights and a category, in every category of at least
MIN_PER_CATEGORY icons. An icon whose drawing fails in any weight is left out of all four, so the
domains always hold the same identities.
"""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..engine.errors import DataError, MissingDependencyError
from . import build
from .emoji_art import ALPHA_MIN, CANVAS, FIT, GREY_MAX, Skip, png_bytes, slug

FORMAT = "phosphor4"
FORMAT_VERSION = 1
DOMAINS = ("thin", "bold", "fill", "duotone")
STYLE = "flat"          # py-phosphor-icons' "stroke" style lacks book-user in four weights
GRID_PX = FIT           # the 256-unit viewBox is rendered at this size ...
MARGIN = (CANVAS - GRID_PX) // 2   # ... and pasted this far from each edge of the canvas
MIN_PER_CATEGORY = 5
SOURCE_PACKAGES = ("py-phosphor-icons", "resvg-py", "pillow", "numpy")
NEEDED_FOR = "building phosphor4"


@dataclass(frozen=True)
class Icon:
    """One Phosphor icon: its name (the identity) and its category (slug and name as in metadata)."""

    name: str
    category: str
    category_name: str


@dataclass(frozen=True)
class Source:
    """Where the SVGs and the metadata live inside the installed py-phosphor-icons."""

    root: Path

    @classmethod
    def locate(cls) -> "Source":
        root = build.package_dir("py-phosphor-icons", "py_phosphor_icons", NEEDED_FOR)
        build.require_modules({"resvg_py": "resvg-py"}, NEEDED_FOR)
        src = cls(root)
        for p in [src.metadata, *(src.root / "svgs" / STYLE / d for d in DOMAINS)]:
            if not p.exists():
                raise MissingDependencyError(
                    f"{p} is missing from its package (an unexpected version?); "
                    f"reinstall with: {build.INSTALL_HINT}")
        return src

    @property
    def metadata(self) -> Path:
        return self.root / "search" / "metadata.json"

    @property
    def phosphor_version(self) -> str:
        try:
            return (self.root / "phosphor_version.txt").read_text(encoding="utf-8").strip()
        except OSError:
            return "?"

    def svg(self, name: str, weight: str) -> Path:
        """The package's file naming: `house.svg` for regular, `house-<weight>.svg` otherwise."""
        stem = name if weight == "regular" else f"{name}-{weight}"
        return self.root / "svgs" / STYLE / weight / f"{stem}.svg"


# --- which icons ------------------------------------------------------------------------------

def read_icons(src: Source) -> tuple[list[Icon], list[dict], list[dict]]:
    """(icons, icons left out, categories left out) of the whole family, in metadata (name) order.

    Kept: icons with a category and an SVG in every domain, in categories of at least
    MIN_PER_CATEGORY such icons."""
    try:
        entries = json.loads(src.metadata.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{src.metadata}: cannot read the icon metadata ({e})") from e
    icons: list[Icon] = []
    left_out: list[dict] = []
    for entry in entries:
        name = entry["name"]
        cat = entry.get("figma_category") or next(iter(entry.get("categories") or []), None)
        if not cat:
            left_out.append({"identity": name, "category": None,
                             "reason": "no category in the package's metadata"})
            continue
        missing = [d for d in DOMAINS if not src.svg(name, d).is_file()]
        if missing:
            left_out.append({"identity": name, "category": slug(cat),
                             "reason": "no SVG in weight(s): " + ", ".join(missing)})
            continue
        icons.append(Icon(name, slug(cat), cat))
    names = Counter(i.name for i in icons)
    if max(names.values(), default=1) > 1:  # would silently overwrite files
        raise DataError(f"{src.metadata}: duplicate icon names: {[n for n, c in names.items() if c > 1]}")
    sizes = Counter(i.category for i in icons)
    small = sorted(c for c, n in sizes.items() if n < MIN_PER_CATEGORY)
    left_categories = [{"category": c, "identities": sizes[c],
                        "reason": f"fewer than {MIN_PER_CATEGORY} icons"} for c in small]
    icons = [i for i in icons if i.category not in small]
    return icons, left_out, left_categories


def select(icons: list[Icon], categories: list[str] | None, limit: int | None) -> list[Icon]:
    """The whole list, or only some categories and/or the first `limit` icons of each category."""
    if categories:
        build.check_known(categories, sorted({i.category for i in icons}), "icon category",
                          "in the Phosphor metadata")
        wanted = set(categories)
        icons = [i for i in icons if i.category in wanted]
    return build.first_per_group(icons, lambda i: i.category, limit)


# --- rendering (also run inside worker processes) ---------------------------------------------

def draw(svg: Path) -> Image.Image:
    """The icon's whole design grid at GRID_PX, composited on white, centred on the canvas."""
    import resvg_py

    data = resvg_py.svg_to_bytes(svg_path=str(svg), width=GRID_PX, height=GRID_PX, skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(data))) as im:
        rgba = im.convert("RGBA")
    if rgba.size != (GRID_PX, GRID_PX):
        raise Skip(f"rendered at {rgba.size[0]}x{rgba.size[1]}, not {GRID_PX}x{GRID_PX} (no square viewBox?)")
    canvas = Image.new("RGBA", (CANVAS, CANVAS), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, (MARGIN, MARGIN))
    rgb = canvas.convert("RGB")
    drawn = (np.asarray(rgba.getchannel("A")) > ALPHA_MIN) & \
            (np.asarray(rgb.convert("L"))[MARGIN:MARGIN + GRID_PX, MARGIN:MARGIN + GRID_PX] < GREY_MAX)
    if not drawn.any():
        raise Skip(f"empty drawing (no pixel with alpha > {ALPHA_MIN} and grey < {GREY_MAX})")
    return rgb


_STATE: dict = {}


def _init_worker(src: Source, icons: list[Icon]) -> None:
    _STATE.update(src=src, icons=icons)


def _render(task: tuple[str, int]) -> tuple[str, int, bytes | None, str]:
    """(domain, icon index) -> (domain, index, PNG bytes or None, reason when it failed)."""
    domain, i = task
    icon: Icon = _STATE["icons"][i]
    try:
        im = draw(_STATE["src"].svg(icon.name, domain))
    except Skip as why:
        return domain, i, None, str(why)
    return domain, i, png_bytes(im), ""


def _run_tasks(tasks, src, icons, workers, progress):
    # _render is looked up here, at call time, so a test can replace it.
    return build.run_tasks(tasks, _render, _init_worker, (src, icons), workers, progress)


# --- the build --------------------------------------------------------------------------------

@dataclass
class BuildResult:
    out: Path
    counts: dict[str, int]
    left_out: list[dict]
    categories: int
    seconds: float
    already_built: bool = False
    manifest: dict = field(default_factory=dict)


def read_manifest(out: str | Path) -> dict | None:
    """The manifest of a complete phosphor4 set at `out`, or None when `out` is not one."""
    return build.read_manifest(Path(out), FORMAT)


def _manifest(src: Source, icons, selection, written, left_out, left_categories) -> dict:
    per_cat: dict[str, dict[str, int]] = {}
    names: dict[str, str] = {}
    for icon in icons:
        per_cat.setdefault(icon.category, {d: 0 for d in DOMAINS})
        names[icon.category] = icon.category_name
    for domain, icon in written:
        per_cat[icon.category][domain] += 1
    per_cat = dict(sorted(per_cat.items()))
    names = dict(sorted(names.items()))
    counts = {d: sum(c[d] for c in per_cat.values()) for d in DOMAINS}
    return {
        **build.manifest_head(FORMAT, FORMAT_VERSION, selection),
        "recipe": {
            "items": "every icon of py-phosphor-icons' search/metadata.json with an SVG in all four weights "
                     f"and a category; categories of at least {MIN_PER_CATEGORY} icons",
            "category": "figma_category of the metadata (else the first of its alphabetically sorted "
                        "'categories'), slugged: 'Weather & Nature' -> 'weather-nature'",
            "domains": {d: f"svgs/{STYLE}/{d}/<name>-{d}.svg" for d in DOMAINS},
            "render": f"whole 256x256 viewBox rendered at {GRID_PX}x{GRID_PX} with resvg-py "
                      "(no system fonts), currentColor = black",
            "frame": f"alpha-composited on white, pasted at ({MARGIN}, {MARGIN}) on a {CANVAS}x{CANVAS} "
                     "white RGB canvas (the design grid is kept: no crop, no per-icon scaling)",
            "aligned": "an icon that fails to draw in any weight is left out of all of them",
            "layout": "<domain>/<category slug>/<icon name>.png",
        },
        "sources": {**build.versions(SOURCE_PACKAGES), "phosphor": src.phosphor_version},
        "icons": len(icons),
        "domains": list(DOMAINS),
        "counts": counts,
        "categories": per_cat,
        "category_names": names,
        "left_out": left_out,
        "left_out_categories": left_categories,
    }


def build_phosphor4(out: str | Path, *, force: bool = False, categories: list[str] | None = None,
                    limit: int | None = None, workers: int | None = None,
                    show_progress: bool = True) -> BuildResult:
    """Build (or find already built) the phosphor4 set at `out`. Raises DataError / MissingDependencyError.

    `categories`: slugs ('weather-nature') or the metadata's names ('Weather & Nature')."""
    t0 = time.perf_counter()
    out = Path(out)
    src = Source.locate()
    categories = [slug(c) or c for c in categories] if categories else None
    icons, left_out, left_categories = read_icons(src)
    icons = select(icons, categories, limit)
    selection = {"categories": sorted(set(categories)) if categories else None, "limit": limit}
    existing = build.check_target(out, FORMAT, force, selection)
    if existing is not None:
        return BuildResult(out, existing["counts"], existing["left_out"], len(existing["categories"]),
                           time.perf_counter() - t0, already_built=True, manifest=existing)
    if categories:  # the whole family's left-outs only where they belong to the selection
        wanted = set(categories)
        left_out = [x for x in left_out if x["category"] in wanted]
        left_categories = [x for x in left_categories if x["category"] in wanted]

    workers = build.default_workers(workers)
    tasks = [(d, i) for i in range(len(icons)) for d in DOMAINS]  # icon-major: each icon's weights in a row
    with build.building(out) as tmp:
        written: list[tuple[str, Icon]] = []
        pending: dict[str, bytes] = {}
        failed: dict[str, str] = {}
        with build.Progress(FORMAT, show_progress, len(tasks)) as advance:
            for domain, i, data, reason in _run_tasks(tasks, src, icons, workers, advance):
                if data is None:
                    failed[domain] = reason
                else:
                    pending[domain] = data
                if len(pending) + len(failed) < len(DOMAINS):
                    continue
                icon = icons[i]
                if failed:
                    left_out.append({"identity": icon.name, "category": icon.category,
                                     "reason": "; ".join(f"{d}: {r}" for d, r in failed.items())})
                else:
                    for d in DOMAINS:
                        build.write_file(tmp / d / icon.category / f"{icon.name}.png", pending[d])
                        written.append((d, icon))
                pending, failed = {}, {}
        manifest = _manifest(src, icons, selection, written, left_out, left_categories)
        # The manifest is the completion marker: written last, then the whole folder is renamed in.
        build.publish(tmp, out, FORMAT, manifest)
    return BuildResult(out, manifest["counts"], left_out, len(manifest["categories"]),
                       time.perf_counter() - t0, manifest=manifest)
