"""Build the photo3 benchmark set: real photographs against clip-art, by coarse category.

    <out>/<domain>/<category>/<identity>.png   plus   <out>/photo3.json

| domain     | what it is                                                                  |
|------------|-----------------------------------------------------------------------------|
| `photo`    | real photographs: GCompris' (Wikimedia Commons & co.) and IFCT 2017's foods |
| `clipart`  | Microsoft Fluent Emoji, flat style (SVG rendered with resvg-py)             |
| `render3d` | Microsoft Fluent Emoji, 3D style (256 px renders)                           |

Categories are coarse (mammal, bird, fish, fruit, building, tool ...): a photo's comes from a
hand-written table (uem.datasets.photo_sources), a clip-art's from its Unicode subgroup
(uem.datasets.clipart). Only categories with at least MIN_PER_DOMAIN pictures in every domain are
kept; the others are listed in the manifest. Identities differ between domains (nothing pairs one
photo with one emoji): photos are named after their source file ('gc-erase-alpaca', 'ifct-E001'),
clip-art after its code points as in emoji3 ('1f418'). Exact duplicates (same bytes) and, among
photos, near duplicates (the same picture re-encoded: difference hash within NEAR_BITS) are left out.

The packages are fetched by name and pinned version with apt-get / npm (uem.datasets.registry) and
checked against pinned sha256s: same packages, same bytes. The manifest records every picture's
source file, author, source page and licence.
"""

from __future__ import annotations

import hashlib
import io
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..engine.errors import DataError
from . import build, clipart, photo_sources as ps, registry
from .emoji_art import Skip, png_bytes

FORMAT = "photo3"
FORMAT_VERSION = 1
DOMAINS = ("photo", "clipart", "render3d")
PHOTO_MAX = 256          # a photo's longer side, at most (never enlarged)
MIN_PER_DOMAIN = 4
HASH_SIDE = 16           # difference hash of 16x16 = 256 bits ...
NEAR_BITS = 12           # ... photos whose hashes differ in <= this many bits are one photo
PACKAGES = (ps.GCOMPRIS, ps.IFCT_PICTURES, ps.IFCT_GROUPS, ps.IFCT_COMPOSITIONS,
            clipart.FLUENT_FLAT, clipart.FLUENT_3D)
SOURCE_PACKAGES = ("emoji-data", "resvg-py", "pillow", "numpy")
NEEDED_FOR = "building photo3"


@dataclass
class Item:
    """One picture to be: where its bytes come from and what the manifest says about it."""

    domain: str
    category: str
    identity: str
    source: str              # package name
    origin: str              # file inside the package
    data: bytes = field(repr=False)
    name: str = ""
    license: str = ""
    author: str = ""
    url: str = ""

    def describe(self) -> dict:
        d = {"domain": self.domain, "category": self.category, "identity": self.identity,
             "source": self.source, "file": self.origin, "name": self.name, "license": self.license}
        if self.author:
            d["author"] = self.author
        if self.url:
            d["url"] = self.url
        return d


def _left(item: Item, reason: str) -> dict:
    return {"domain": item.domain, "category": item.category, "identity": item.identity,
            "file": item.origin, "reason": reason}


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "-" for c in text).strip("-")


# --- reading the sources ----------------------------------------------------------------------

def gcompris_items(rcc: dict[str, dict[str, bytes]]) -> tuple[list[Item], list[dict]]:
    """Photos of GCOMPRIS_PHOTOS from {rcc name: {path: bytes}} (paths below ACTIVITIES)."""
    items: list[Item] = []
    left: list[dict] = []
    files: dict[str, bytes] = {}
    for contents in rcc.values():
        files.update({p[len(ps.ACTIVITIES):]: b for p, b in contents.items() if p.startswith(ps.ACTIVITIES)})
    readmes = {p.rsplit("/", 1)[0]: ps.parse_readme(b.decode("utf-8", "replace"))
               for p, b in files.items() if p.endswith("/README")}
    for folder, table in ps.GCOMPRIS_PHOTOS.items():
        for stem, category in table.items():
            identity = "gc-" + safe_name(folder.replace("/resource", "").replace("/images", "")
                                         .replace("/animals", "").replace("/", "-") + "-" + stem)
            hit = next(((f"{stem}{ext}", files[f"{folder}/{stem}{ext}"]) for ext in (".webp", ".jpg", ".png")
                        if f"{folder}/{stem}{ext}" in files), None)
            if hit is None:
                left.append({"domain": "photo", "category": category, "identity": identity,
                             "file": f"{folder}/{stem}.webp", "reason": "not in the package"})
                continue
            filename, data = hit
            item = Item("photo", category, identity, ps.GCOMPRIS.name, f"{folder}/{filename}", data,
                        name=stem)
            credit = ps.credit_for(readmes, folder, filename)
            if credit is None:
                left.append(_left(item, "no licence for it in the README"))
                continue
            item.license, item.author, item.url = credit.license, credit.author, credit.source
            items.append(item)
    return items, left


def ifct_items(pictures: dict[str, bytes], groups: dict[str, str], names: dict[str, str]) -> list[Item]:
    """Photos of the used IFCT food groups from {'assets/E001.jpeg': bytes}, in code order."""
    items = []
    for path in sorted(pictures):
        code = path.rsplit("/", 1)[-1].split(".")[0]
        category = ps.ifct_category(code, names.get(code, ""))
        if category is None:
            continue
        group = groups.get(code[:1], "?")
        items.append(Item("photo", category, f"ifct-{code}", ps.IFCT_PICTURES.name, path, pictures[path],
                          name=f"{names.get(code, code)} ({group})", license=ps.IFCT_LICENSE))
    return items


def clipart_items(emoji: list, flat: dict[str, bytes], d3: dict[str, bytes]) -> tuple[list[Item], list[dict]]:
    """Both clip-art domains of every (emoji, category), in emoji-test.txt order."""
    items: list[Item] = []
    left: list[dict] = []
    for e, category in emoji:
        for domain, pkg, names, files in (("clipart", clipart.FLUENT_FLAT, clipart.flat_names(e), flat),
                                          ("render3d", clipart.FLUENT_3D, clipart.d3_names(e), d3)):
            try:
                origin, data = clipart.find(files, names, f"{domain} file")
            except Skip as why:
                left.append({"domain": domain, "category": category, "identity": e.identity,
                             "file": names[0], "reason": str(why)})
                continue
            items.append(Item(domain, category, e.identity, pkg.name, origin, data, name=e.name,
                              license=pkg.license))
    return items, left


# --- duplicates, categories, selection --------------------------------------------------------

def dhash(data: bytes) -> int:
    """Difference hash of a picture: grey, (HASH_SIDE+1) x HASH_SIDE, each pixel against its right
    neighbour. Measured on photo3's photos: the same photo twice differs in 0-3 of the 256 bits, two
    different photos in 35 or more (64 bits were too few: a guava and betel leaves differed in 4)."""
    with Image.open(io.BytesIO(data)) as im:
        grey = np.asarray(im.convert("L").resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.BILINEAR),
                          dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def dedupe(items: list[Item]) -> tuple[list[Item], list[dict]]:
    """First of each set of identical files per domain; among photos also first of near duplicates."""
    kept: list[Item] = []
    left: list[dict] = []
    seen: dict[tuple[str, str], Item] = {}
    hashes: list[tuple[int, Item]] = []
    for item in items:
        key = (item.domain, hashlib.md5(item.data).hexdigest())
        if key in seen:
            left.append(_left(item, f"same file as {seen[key].identity}"))
            continue
        seen[key] = item
        if item.domain == "photo":
            try:
                h = dhash(item.data)
            except (OSError, ValueError):
                left.append(_left(item, "does not decode"))
                continue
            twin = next((other for oh, other in hashes if bin(oh ^ h).count("1") <= NEAR_BITS), None)
            if twin is not None:
                left.append(_left(item, f"same photo as {twin.identity} (difference hashes within {NEAR_BITS} bits)"))
                continue
            hashes.append((h, item))
        kept.append(item)
    return kept, left


def keep_categories(items: list[Item], minimum: int = MIN_PER_DOMAIN) -> tuple[list[str], list[dict]]:
    """(categories with >= minimum pictures in every domain, the others with their counts)."""
    n = Counter((i.category, i.domain) for i in items)
    kept, dropped = [], []
    for c in sorted({i.category for i in items}):
        counts = {d: n[(c, d)] for d in DOMAINS}
        if min(counts.values()) >= minimum:
            kept.append(c)
        else:
            dropped.append({"category": c, "counts": counts,
                            "reason": f"fewer than {minimum} pictures in " +
                                      ", ".join(d for d in DOMAINS if counts[d] < minimum)})
    return kept, dropped


# --- drawing ----------------------------------------------------------------------------------

def photo_image(data: bytes) -> Image.Image:
    """RGB (transparency on white), EXIF orientation applied, longer side at most PHOTO_MAX."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            rgba = im.convert("RGBA")
    except (OSError, ValueError) as e:
        raise Skip(f"photo does not decode ({e})") from None
    rgb = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb.alpha_composite(rgba)
    rgb = rgb.convert("RGB")
    w, h = rgb.size
    if max(w, h) > PHOTO_MAX:
        s = PHOTO_MAX / max(w, h)
        rgb = rgb.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    return rgb


def render(item: Item) -> bytes:
    """PNG bytes of an item in its domain's framing; Skip when it cannot be drawn."""
    if item.domain == "photo":
        im = photo_image(item.data)
    elif item.origin.endswith(".svg"):
        im = clipart.draw_svg(item.data)
    else:
        im = clipart.draw_raster(item.data)
    return png_bytes(im)


# --- the build --------------------------------------------------------------------------------

@dataclass
class BuildResult:
    out: Path
    counts: dict[str, int]
    categories: dict[str, dict[str, int]]
    left_out: list[dict]
    seconds: float
    already_built: bool = False
    manifest: dict = field(default_factory=dict)


def read_manifest(out: str | Path) -> dict | None:
    """The manifest of a complete photo3 set at `out`, or None when `out` is not one."""
    return build.read_manifest(Path(out), FORMAT)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fetch_all(cache: Path | None, log: Callable[[str], None]) -> dict[str, Path]:
    return {p.name: registry.fetch(p, cache, log, NEEDED_FOR) for p in PACKAGES}


def read_sources(paths: dict[str, Path], log: Callable[[str], None]) -> tuple[list[Item], list[dict]]:
    """Every candidate picture of every domain (before de-duplication and the category rule)."""
    log("reading the GCompris resource files ...")
    from .qtrcc import read_rcc

    wanted = set(ps.rcc_files())
    debs = registry.read_deb(paths[ps.GCOMPRIS.name], lambda n: n in wanted)
    missing = sorted(wanted - set(debs))
    if missing:
        raise DataError(f"{paths[ps.GCOMPRIS.name]}: no {', '.join(missing)} inside (another package version?)")
    rcc = {n: read_rcc(b, f"{ps.GCOMPRIS.filename}:{n}", ps.ACTIVITIES) for n, b in debs.items()}
    photos, left = gcompris_items(rcc)
    log("reading the IFCT 2017 pictures ...")
    pictures = registry.read_npm(paths[ps.IFCT_PICTURES.name], lambda n: n.startswith("assets/"))
    groups = ps.read_csv_column_pairs(
        registry.read_npm(paths[ps.IFCT_GROUPS.name], lambda n: n == "index.csv").get("index.csv", b""), 0, 1)
    names = ps.read_csv_column_pairs(
        registry.read_npm(paths[ps.IFCT_COMPOSITIONS.name], lambda n: n == "index.csv").get("index.csv", b""), 0, 1)
    photos += ifct_items(pictures, groups, names)
    log("reading Fluent Emoji (flat and 3D) ...")
    emoji = clipart.clipart_emoji(clipart.emoji_list_path(NEEDED_FOR))
    flat = registry.read_npm(paths[clipart.FLUENT_FLAT.name], lambda n: n.startswith(clipart.FLAT_DIR))
    d3 = registry.read_npm(paths[clipart.FLUENT_3D.name], lambda n: n.startswith(clipart.D3_DIR))
    art, left_art = clipart_items(emoji, flat, d3)
    return photos + art, left + left_art


def _manifest(selection, written, left_out, kept, dropped, packages) -> dict:
    per_cat = {c: {d: 0 for d in DOMAINS} for c in kept}
    licences: dict[str, Counter] = {d: Counter() for d in DOMAINS}
    for item in written:
        per_cat[item.category][item.domain] += 1
        licences[item.domain][item.license] += 1
    per_cat = {c: v for c, v in per_cat.items() if sum(v.values())}
    return {
        **build.manifest_head(FORMAT, FORMAT_VERSION, selection),
        "recipe": {
            "photo": f"RGB on white, EXIF orientation applied, longer side at most {PHOTO_MAX} px "
                     "(LANCZOS, never enlarged)",
            "clipart": f"Fluent Emoji flat SVG rendered at {clipart.SVG_PX} px with resvg-py; framed as emoji3",
            "render3d": "Fluent Emoji 3D WebP; framed as emoji3",
            "frame": "clip-art: composite on white, crop to alpha > 8 and grey < 250, fit 112x112 LANCZOS, "
                     "centre on 128x128 white RGB",
            "categories": f"photos: hand-written table (uem.datasets.photo_sources); clip-art: Unicode "
                          f"subgroup with per-emoji exceptions (uem.datasets.clipart); kept: categories "
                          f"with at least {MIN_PER_DOMAIN} pictures in every domain",
            "duplicates": f"identical files left out (per domain); photos also when their difference "
                          f"hashes differ in at most {NEAR_BITS} of {HASH_SIDE * HASH_SIDE} bits",
            "layout": "<domain>/<category>/<identity>.png; identities unique per domain, not shared "
                      "between photo and clip-art",
        },
        "packages": [p.describe() for p in packages],
        "sources": build.versions(SOURCE_PACKAGES),
        "domains": list(DOMAINS),
        "counts": {d: sum(v[d] for v in per_cat.values()) for d in DOMAINS},
        "categories": per_cat,
        "categories_in_all_domains": list(per_cat),
        "left_out_categories": dropped,
        "licenses": {d: dict(sorted(c.items())) for d, c in licences.items()},
        "items": [i.describe() for i in written],
        "left_out": left_out,
    }


def _selection(categories: list[str] | None, limit: int | None) -> dict:
    return {"categories": sorted(set(categories)) if categories else None, "limit": limit}


def _already_built(out: Path, existing: dict, t0: float) -> BuildResult:
    return BuildResult(out, existing["counts"], existing["categories"], existing["left_out"],
                       time.perf_counter() - t0, already_built=True, manifest=existing)


def build_from_items(out: Path, items: list[Item], left_out: list[dict], *, force: bool = False,
                     categories: list[str] | None = None, limit: int | None = None,
                     show_progress: bool = True, t0: float | None = None) -> BuildResult:
    """De-duplicate, keep shared categories, select, draw and write the set (atomically) at `out`."""
    t0 = time.perf_counter() if t0 is None else t0
    out = Path(out)
    items, dups = dedupe(items)
    left_out = left_out + dups
    kept, dropped = keep_categories(items)
    if categories:
        build.check_known(categories, kept, "category", "in photo3")
        kept = [c for c in kept if c in set(categories)]
    selection = _selection(categories, limit)
    existing = build.check_target(out, FORMAT, force, selection)
    if existing is not None:
        return _already_built(out, existing, t0)
    wanted = set(kept)
    items = [i for i in items if i.category in wanted]
    items = build.first_per_group(items, lambda i: f"{i.domain}/{i.category}", limit)
    names = Counter((i.domain, i.identity) for i in items)
    twice = sorted(f"{d}/{n}" for (d, n), k in names.items() if k > 1)
    if twice:  # would silently overwrite files
        raise DataError(f"photo3: duplicate identities: {', '.join(twice[:5])}")
    with build.building(out) as tmp:
        written: list[Item] = []
        with build.Progress(FORMAT, show_progress, len(items)) as advance:
            for item in items:
                try:
                    data = render(item)
                except Skip as why:
                    left_out.append(_left(item, str(why)))
                else:
                    build.write_file(tmp / item.domain / item.category / f"{item.identity}.png", data)
                    written.append(item)
                advance()
        manifest = _manifest(selection, written, left_out, kept, dropped, PACKAGES)
        # The manifest is the completion marker: written last, then the whole folder is renamed in.
        build.publish(tmp, out, FORMAT, manifest)
    return BuildResult(out, manifest["counts"], manifest["categories"], left_out,
                       time.perf_counter() - t0, manifest=manifest)


def build_photo3(out: str | Path, *, force: bool = False, categories: list[str] | None = None,
                 limit: int | None = None, cache: str | Path | None = None, show_progress: bool = True,
                 log: Callable[[str], None] | None = None) -> BuildResult:
    """Fetch the pinned packages (cached), then build (or find already built) the photo3 set at `out`.

    Raises DataError (RegistryError, RccError) / MissingDependencyError with a one-line reason."""
    t0 = time.perf_counter()
    log = log or (_stderr if show_progress else (lambda s: None))
    # an existing set (or a folder that is not one) is known before anything is fetched or decoded
    existing = build.check_target(Path(out), FORMAT, force, _selection(categories, limit))
    if existing is not None:
        return _already_built(Path(out), existing, t0)
    build.require_modules({"resvg_py": "resvg-py"}, NEEDED_FOR)
    clipart.emoji_list_path(NEEDED_FOR)
    paths = fetch_all(Path(cache) if cache else None, log)
    items, left_out = read_sources(paths, log)
    return build_from_items(Path(out), items, left_out, force=force, categories=categories, limit=limit,
                            show_progress=show_progress, t0=t0)
