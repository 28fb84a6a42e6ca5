"""Contact sheet: one row per query — the query image, then its hits with scores; rejections marked.

The quickest way for a person to judge retrieval: look at it. Hit images are read from the paths
stored in the bundle; a hit whose file is gone is drawn as a grey tile, never an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .atomic import replacing
from .engine import QueryResult
from .errors import ImageError, UemError
from .preprocess import ImageSource, fit_square, load_image

MAX_ROWS = 64
_PAD = 6
_TEXT_H = 30
_GREEN, _RED, _GREY = (20, 130, 40), (200, 30, 30), (120, 120, 120)


@dataclass
class SheetRow:
    query: ImageSource
    label: str            # shown under the query (usually its file name)
    result: QueryResult


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _thumb(source: ImageSource, size: int) -> Image.Image | None:
    try:
        return fit_square(load_image(source, draft_size=size), size)
    except ImageError:
        return None


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else "…" + text[-(n - 1):]


def _verdict(r: QueryResult) -> str:
    text = ("ACCEPTED" if r.accepted else "REJECTED") + f" -> {r.domain}"
    if r.source:
        text += f" (from {r.source})"
    return text + f": {r.reason}  [score {r.score:.3g}]"


def render_sheet(rows: Sequence[SheetRow], *, thumb: int = 96, k: int | None = None) -> Image.Image:
    """Draw the sheet in memory (the first MAX_ROWS rows)."""
    rows = list(rows)[:MAX_ROWS]
    k = k if k is not None else max((len(r.result.hits) for r in rows), default=0)
    cols = 1 + max(k, 1)
    cell_w, cell_h = thumb + _PAD, thumb + _TEXT_H + _PAD
    header = 22
    small, big = _font(11), _font(13)
    verdicts = [_verdict(r.result) for r in rows]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max([measure.textlength(v, font=big) for v in verdicts]
                 + [cell_w + measure.textlength("no match: " + r.result.reason, font=big)
                    for r in rows if not r.result.hits], default=0)
    width = int(max(cols * cell_w, text_w + 4)) + 2 * _PAD
    sheet = Image.new("RGB", (width, _PAD + len(rows) * (cell_h + header) + _PAD), "white")
    draw = ImageDraw.Draw(sheet)
    chars = max(8, thumb // 6)
    for i, row in enumerate(rows):
        r = row.result
        y = _PAD + i * (cell_h + header)
        draw.text((_PAD, y), verdicts[i], fill=_GREEN if r.accepted else _RED, font=big)
        y += header
        tiles = [(row.query, row.label, None)] + [(h.path, h.id, h.score) for h in r.hits[:k]]
        for j, (src, name, score) in enumerate(tiles):
            x = _PAD + j * cell_w
            im = _thumb(src, thumb)
            if im is None:
                draw.rectangle([x, y, x + thumb - 1, y + thumb - 1], fill=(225, 225, 225))
                draw.text((x + 4, y + thumb // 2 - 6), "missing", fill=_GREY, font=small)
            else:
                sheet.paste(im, (x, y))
            if j == 0:
                colour = _GREEN if r.accepted else _RED
                draw.rectangle([x - 2, y - 2, x + thumb + 1, y + thumb + 1], outline=colour, width=3)
                draw.text((x, y + thumb + 2), _short(os.path.basename(name) or name, chars),
                          fill="black", font=small)
                draw.text((x, y + thumb + 15), "query", fill=_GREY, font=small)
            else:
                draw.text((x, y + thumb + 2), f"{score:.3f}", fill="black", font=small)
                draw.text((x, y + thumb + 15), _short(name, chars), fill=_GREY, font=small)
        if not r.accepted and not r.hits:
            x = _PAD + cell_w
            draw.text((x + 4, y + thumb // 2 - 6), "no match: " + r.reason, fill=_RED, font=big)
    return sheet


def write_sheet(rows: Sequence[SheetRow], out: str | os.PathLike, *, thumb: int = 96,
                k: int | None = None) -> Path:
    """Render and save a PNG atomically (a temp file renamed over `out`)."""
    out = Path(out)
    image = render_sheet(rows, thumb=thumb, k=k)
    try:
        with replacing(out) as tmp:
            image.save(tmp, format="PNG")
    except OSError as e:
        raise UemError(f"{out}: cannot write the contact sheet ({e.strerror or e})") from None
    return out
