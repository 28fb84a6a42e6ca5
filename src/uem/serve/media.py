"""The server's media folder: uploaded pictures, content-addressed, written atomically.

A picture's file name is the sha256 of its bytes (plus the extension of its decoded format), under
a two-letter fan-out folder: `MEDIA/ab/ab12...ef.png`. The same bytes always land on the same file,
so re-uploading is harmless, and a file is complete (fsynced, then renamed into place) before the
add that records its path commits; a crash between the two leaves an unreferenced picture, never a
referenced one that is missing or half-written.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..engine.atomic import fsync_dir, replace_atomic

# PIL format name -> extension the engine accepts (uem.engine.preprocess.IMAGE_EXTENSIONS).
_EXT = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
        "TIFF": ".tif", "PPM": ".ppm"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# What an add accepts, in words (a picture in another format is refused: its file could not be served).
STORABLE_FORMATS = ("PNG", "JPEG", "GIF", "WebP", "BMP", "TIFF", "PPM")


def extension(pil_format: str | None) -> str | None:
    """The file extension for a decoded picture's format; None for a format the engine does not
    read from files (such a picture is refused, not stored)."""
    return _EXT.get((pil_format or "").upper())


class MediaStore:
    """Content-addressed picture files under one folder the server owns."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()

    def path_for(self, digest: str, ext: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / f"{digest}{ext}"

    def put(self, data: bytes, ext: str) -> tuple[str, Path]:
        """Store `data` (idempotent); returns (sha256, absolute path). The file is durable on return."""
        digest = sha256_hex(data)
        path = self.path_for(digest, ext)
        if path.is_file() and path.stat().st_size == len(data) and sha256_hex(path.read_bytes()) == digest:
            return digest, path
        fresh = not path.parent.is_dir()
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            fsync_dir(self.root)
        replace_atomic(path, data)  # temp file, fsync, rename, fsync the folder
        return digest, path
