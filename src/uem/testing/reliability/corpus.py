"""The fuzzer's files: a named corpus of hand-made cases (truncations, junk, decompression bombs,
odd modes, EXIF orientations) and a seeded byte mutator over valid seeds of every format the engine
reads. Every case says what the engine must answer (`Case.expect`). Seeded; nothing here runs uem.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------
# the named corpus


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def red_picture(size: tuple[int, int] = (40, 40), seed: int = 0) -> Image.Image:
    """A noisy full-frame red picture: uem.testing.bundles' 'red' concept, so its answer is known."""
    rng = np.random.default_rng(seed)
    a = np.empty((size[1], size[0], 3), np.float32)
    a[:] = (220, 30, 30)
    a += rng.normal(0, 10, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_header(width: int, height: int, payload: bytes = b"\x00" * 64) -> bytes:
    """A PNG whose IHDR declares width x height (valid CRCs) over a tiny IDAT: a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(payload)) + _png_chunk(b"IEND", b""))


def gif_with_header(width: int, height: int) -> bytes:
    """A GIF whose screen and image descriptor declare width x height (max 65535 each)."""
    g = _save(Image.new("P", (2, 2), 0), "GIF")
    b = bytearray(g)
    b[6:10] = struct.pack("<HH", width, height)
    i = b.index(b"\x2c")  # image descriptor
    b[i + 5:i + 9] = struct.pack("<HH", width, height)
    return bytes(b)


def bmp_with_header(width: int, height: int) -> bytes:
    b = bytearray(_save(Image.new("RGB", (2, 2), (255, 0, 0)), "BMP"))
    b[18:26] = struct.pack("<ii", width, height)
    return bytes(b)


def zlib_bomb_png(side: int) -> bytes:
    """A real side x side all-white RGB PNG: a few hundred KB that inflate to side*side*3 bytes."""
    raw_row = b"\x00" + b"\xff" * (3 * side)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(raw_row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


# Transforms that display EXIF orientation n, written out independently of PIL's exif_transpose.
ORIENTATION_OPS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


def oriented_jpeg(orientation: int, im: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(im, "JPEG", quality=95, exif=exif.tobytes())


@dataclass(frozen=True)
class Case:
    """One corpus file. expect: 'red' (answered, top hit red), 'answer' (any well-formed answer),
    'error' (a typed error), 'either' (answer or typed error: mutated files)."""

    name: str
    data: bytes
    expect: str
    needle: str = ""  # for 'error': a word the message must contain


def seeds() -> dict[str, bytes]:
    """Valid images of every format the engine reads: the mutator's starting points."""
    red = red_picture()
    frames = [red_picture(seed=s).convert("P") for s in range(3)]
    pal = Image.new("P", (24, 24), 1)
    pal.putpalette([255, 255, 255, 220, 30, 30] + [0] * 762)
    rgba = red.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(red.size))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png": _save(red, "PNG"),
        "png-rgba": _save(rgba, "PNG"),
        "png-pal": _save(pal, "PNG", transparency=0),
        "png-16": _save(Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100), "PNG"),
        "jpg": _save(red, "JPEG", quality=90),
        "jpg-exif": _save(red, "JPEG", quality=90, exif=exif.tobytes()),
        "jpg-progressive": _save(red, "JPEG", quality=80, progressive=True),
        "jpg-cmyk": _save(red.convert("CMYK"), "JPEG"),
        "gif": _save(frames[0], "GIF"),
        "gif-anim": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "webp": _save(red, "WEBP", quality=80),
        "webp-lossless": _save(rgba, "WEBP", lossless=True),
        "webp-anim": _save(red, "WEBP", save_all=True, append_images=[red_picture(seed=9)], duration=50),
        "bmp": _save(red, "BMP"),
        "tif": _save(red, "TIFF"),
        "tif-lzw": _save(red, "TIFF", compression="tiff_lzw"),
        "ppm": _save(red, "PPM"),
    }


EXTENSION = {"png": ".png", "jpg": ".jpg", "gif": ".gif", "webp": ".webp", "bmp": ".bmp",
             "tif": ".tif", "ppm": ".ppm"}


def ext_of(seed_name: str) -> str:
    return EXTENSION[seed_name.split("-")[0]]


def named_corpus() -> list[Case]:
    """The hand-made cases of the issue: truncations, junk, bombs, odd modes, EXIF orientations."""
    red = red_picture()
    cases: list[Case] = []
    for name, data in seeds().items():
        ext = ext_of(name)
        # every seed is a valid picture of red (or of red-ish frames / a grey ramp for png-16)
        cases.append(Case(f"seed-{name}{ext}", data, "answer" if name == "png-16" else "red"))
        for frac in (0.1, 0.5, 0.9):
            cases.append(Case(f"trunc{int(frac * 100)}-{name}{ext}", data[:max(1, int(len(data) * frac))],
                              "either"))
    rng = np.random.default_rng(12345)
    cases += [
        Case("zero-bytes.png", b"", "error", "empty"),
        Case("random-4k.png", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "error", "not an image"),
        Case("random-1.jpg", b"\x07", "error", "not an image"),
        Case("text.png", b"just some text, not an image\n" * 20, "error", "not an image"),
        Case("utf16-text.jpg", "hello".encode("utf-16"), "error", "not an image"),
        Case("html.gif", b"<html><body>GIF89a</body></html>", "error", "not an image"),
        Case("png-magic-only.png", b"\x89PNG\r\n\x1a\n", "error", ""),
        Case("jpeg-soi-only.jpg", b"\xff\xd8\xff", "error", ""),
        Case("huge-ihdr.png", png_with_header(100_000, 100_000), "error", "too large"),
        Case("bomb-ihdr-6500.png", png_with_header(6500, 6500), "error", "too large"),
        Case("huge-ihdr-max.png", png_with_header(2**31 - 1, 2**31 - 1), "error", ""),
        Case("zero-ihdr.png", png_with_header(0, 10), "error", ""),
        Case("huge-gif.gif", gif_with_header(65535, 65535), "error", "too large"),
        Case("huge-bmp.bmp", bmp_with_header(200_000, 200_000), "error", "too large"),
        Case("huge-bmp-negative.bmp", bmp_with_header(50_000, -50_000), "error", ""),
        Case("one-pixel.png", _save(Image.new("RGB", (1, 1), (220, 30, 30)), "PNG"), "red"),
        Case("one-pixel.gif", _save(Image.new("P", (1, 1), 0), "GIF"), "answer"),
        Case("strip-10000x10.png", _save(Image.new("RGB", (10000, 10), (220, 30, 30)), "PNG"), "answer"),
        Case("strip-10x10000.jpg", _save(Image.new("RGB", (10, 10000), (220, 30, 30)), "JPEG"), "answer"),
        Case("cmyk.jpg", _save(red.convert("CMYK"), "JPEG"), "red"),
        Case("cmyk.tif", _save(red.convert("CMYK"), "TIFF"), "red"),
        Case("gray16.png", _save(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "PNG"), "answer"),
        Case("gray16.tif", _save(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "TIFF"), "answer"),
        Case("float32.tif", _save(Image.fromarray(np.full((20, 20), 0.5, np.float32)), "TIFF"), "answer"),
        Case("bilevel.png", _save(Image.new("1", (20, 20), 1), "PNG"), "answer"),
        Case("la.png", _save(Image.new("LA", (20, 20), (0, 0)), "PNG"), "answer"),
    ]
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 220, 30, 30] + [0] * 762)
    pal.paste(1, (5, 5, 15, 15))
    cases.append(Case("palette-transparent.png", _save(pal, "PNG", transparency=0), "answer"))
    cases.append(Case("palette-transparent.gif", _save(pal, "GIF", transparency=0), "answer"))
    anim = [red_picture(seed=s) for s in range(4)]
    cases.append(Case("animated.png", _save(anim[0], "PNG", save_all=True, append_images=anim[1:]), "red"))
    cases.append(Case("animated.gif", _save(anim[0].convert("P"), "GIF", save_all=True,
                                            append_images=[a.convert("P") for a in anim[1:]]), "red"))
    cases.append(Case("animated.webp", _save(anim[0], "WEBP", save_all=True, append_images=anim[1:]), "red"))
    for o in ORIENTATION_OPS:
        cases.append(Case(f"exif-orientation-{o}.jpg", oriented_jpeg(o, red_picture((48, 24))), "red"))
    return cases


# ---------------------------------------------------------------------------------------------
# the mutator

_INTERESTING_8 = [0x00, 0x01, 0x7F, 0x80, 0xFF]
_INTERESTING_32 = [0, 1, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 100_000]


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC so a mutated PNG gets past the CRC check into the decoders."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data[:8]), 8
    while pos + 12 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 12 + n > len(data):
            break
        body = data[pos + 4:pos + 8 + n]
        out += data[pos:pos + 8 + n] + struct.pack(">I", zlib.crc32(body))
        pos += 12 + n
    return bytes(out + data[pos:])


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """1-4 random edits (bit flips, interesting values, inserts, deletes, duplicates, truncation);
    half of the positions fall in the first 64 bytes, where the headers are."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            b += bytes([rnd.randrange(256)])
        pos = rnd.randrange(min(len(b), 64)) if rnd.random() < 0.5 else rnd.randrange(len(b))
        op = rnd.randrange(8)
        if op == 0:
            b[pos] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b[pos] = rnd.randrange(256)
        elif op == 2:
            b[pos] = rnd.choice(_INTERESTING_8)
        elif op == 3:
            v = rnd.choice(_INTERESTING_32)
            b[pos:pos + 4] = struct.pack(rnd.choice([">I", "<I"]), v)
        elif op == 4:
            del b[pos:pos + rnd.randint(1, 32)]
        elif op == 5:
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif op == 6:
            span = bytes(b[pos:pos + rnd.randint(1, 64)])
            b[pos:pos] = span * rnd.randint(1, 8)
        else:
            del b[rnd.randrange(len(b)):]
    out = bytes(b)
    return _fix_png_crcs(out) if rnd.random() < 0.7 else out


def mutated_corpus(n: int, seed: int) -> list[Case]:
    """n mutants, spread round-robin over the seeds; each named after its seed format."""
    rnd = random.Random(seed)
    base = seeds()
    names = sorted(base)
    return [Case(f"mut{i:06d}-{names[i % len(names)]}{ext_of(names[i % len(names)])}",
                 mutate(base[names[i % len(names)]], rnd), "either")
            for i in range(n)]


def write_cases(folder: Path, cases: list[Case]) -> dict[str, Case]:
    folder.mkdir(parents=True, exist_ok=True)
    for c in cases:
        (folder / c.name).write_bytes(c.data)
    return {c.name: c for c in cases}
