"""Read Qt binary resource files (`.rcc`, made by `rcc -binary`): {path: bytes}, no Qt needed.

The layout (Qt's rcc.cpp / qresource.cpp), all integers big-endian:

    header   b"qres", version (u32), tree offset (u32), data offset (u32), names offset (u32)
             [version >= 3: overall flags (u32)]
    tree     one fixed-size entry per node, the root first (entry 0):
             name offset (u32), flags (u16), then
               a directory (flags & 2): child count (u32), index of its first child (u32)
               a file:                  territory (u16), language (u16), data offset (u32)
             [version >= 2: last-modified time (u64)]
    names    at each name offset: length in UTF-16 units (u16), hash (u32), UTF-16-BE characters
    data     at each data offset: length (u32), payload; a zlib-compressed payload (flags & 1) is
             qCompress's: uncompressed length (u32) then a zlib stream; flags & 4 is zstd

Only what a benchmark builder needs: every file below a folder, read eagerly from bytes in memory.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ..engine.errors import DataError

MAGIC = b"qres"
COMPRESSED = 0x01
DIRECTORY = 0x02
COMPRESSED_ZSTD = 0x04


class RccError(DataError):
    """A file that is not a readable Qt resource file (the message says where and why)."""


def _entry_size(version: int) -> int:
    return 14 if version < 2 else 22


def read_rcc(data: bytes, where: str = "resource file", prefix: str = "") -> dict[str, bytes]:
    """{path inside the resource ('erase/resource/cat.webp'): file bytes} of every file.

    `prefix`: only files whose path starts with it (nothing else is decompressed)."""
    if data[:4] != MAGIC or len(data) < 20:
        raise RccError(f"{where}: not a Qt resource file (no 'qres' header)")
    version, tree, payload, names = struct.unpack_from(">IIII", data, 4)
    if version not in (1, 2, 3):
        raise RccError(f"{where}: Qt resource format version {version} is not supported (1-3 are)")
    size = _entry_size(version)
    out: dict[str, bytes] = {}

    def unpack(fmt: str, offset: int) -> tuple:
        try:
            return struct.unpack_from(fmt, data, offset)
        except struct.error:
            raise RccError(f"{where}: truncated (reading {struct.calcsize(fmt)} bytes at {offset})") from None

    def name(offset: int) -> str:
        (n,) = unpack(">H", names + offset)
        start = names + offset + 6
        raw = data[start:start + 2 * n]
        if len(raw) != 2 * n:
            raise RccError(f"{where}: truncated name at {names + offset}")
        return raw.decode("utf-16-be")

    def content(flags: int, offset: int, path: str) -> bytes:
        (n,) = unpack(">I", payload + offset)
        raw = data[payload + offset + 4:payload + offset + 4 + n]
        if len(raw) != n:
            raise RccError(f"{where}: truncated data of {path}")
        if flags & COMPRESSED:
            if n < 4:
                raise RccError(f"{where}: {path}: compressed entry too short")
            (expected,) = struct.unpack_from(">I", raw)
            try:
                raw = zlib.decompress(raw[4:])
            except zlib.error as e:
                raise RccError(f"{where}: {path}: bad zlib data ({e})") from None
            if len(raw) != expected:
                raise RccError(f"{where}: {path}: {len(raw)} bytes uncompressed, header says {expected}")
        elif flags & COMPRESSED_ZSTD:
            raise RccError(f"{where}: {path} is zstd-compressed, which this reader does not support")
        return raw

    def walk(index: int, parent: str, depth: int) -> None:
        if depth > 64:
            raise RccError(f"{where}: resource tree deeper than 64 levels (a loop?)")
        entry = tree + index * size
        name_offset, flags = unpack(">IH", entry)
        path = parent if index == 0 else (f"{parent}/{name(name_offset)}" if parent else name(name_offset))
        if flags & DIRECTORY:
            count, first = unpack(">II", entry + 6)
            if first <= index and count:
                raise RccError(f"{where}: directory {path or '/'} points backwards (a loop?)")
            for child in range(first, first + count):
                walk(child, path, depth + 1)
        elif not prefix or path.startswith(prefix):
            _, _, data_offset = unpack(">HHI", entry + 6)
            out[path] = content(flags, data_offset, path)

    walk(0, "", 0)
    return out


def read_rcc_file(path: str | Path, prefix: str = "") -> dict[str, bytes]:
    """read_rcc of a file on disk."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RccError(f"{path}: cannot read ({e.strerror or e})") from None
    return read_rcc(data, str(path), prefix)

