"""Shared helpers of the engine commands: which bundle, which images, printable names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from ..engine.preprocess import IMAGE_EXTENSIONS

BUNDLE_ENV = "UEM_BUNDLE"
DEFAULT_BUNDLE = "model.uem"
BUNDLE_HELP = f"Bundle directory (default: ${BUNDLE_ENV}, else ./{DEFAULT_BUNDLE})."


def bundle_path(given: Path | None) -> Path:
    """--bundle, else $UEM_BUNDLE, else ./model.uem."""
    if given is not None:
        return given
    return Path(os.environ.get(BUNDLE_ENV) or DEFAULT_BUNDLE)


def chosen_bundle(given: Path | None) -> Path:
    """bundle_path(), and when the default is missing, an error that says how to choose one."""
    from ..engine.errors import BundleError

    path = bundle_path(given)
    if given is None and not path.exists():
        raise BundleError(f"{path}: no such bundle (pass a bundle path or set ${BUNDLE_ENV})")
    return path


# Control characters (a file may be named "a\nb.png") would split one output line into several.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


def printable(s: str | os.PathLike) -> str:
    """A string safe to print/JSON-encode on one line: undecodable file-name bytes become U+FFFD,
    control characters and line separators are shown escaped (\\x0a)."""
    return os.fsdecode(s).encode("utf-8", "surrogateescape").decode("utf-8", "replace").translate(_ESCAPES)


def _walk(folder: Path) -> Iterator[Path]:
    """Image files under `folder`, depth first, sorted per directory, without loading the tree."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return
    for e in entries:
        try:
            if e.is_dir(follow_symlinks=False):
                yield from _walk(Path(e.path))
            elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS:
                yield Path(e.path)
        except OSError:
            continue


def iter_images(args: Iterable[Path]) -> Iterator[Path]:
    """Expand files and directories (recursively, image extensions only), streaming.

    A named file is always yielded (a missing or bad one then fails with its own clear message).
    """
    for a in args:
        if os.path.isdir(a):  # False (not an exception) for a path too long to stat
            yield from _walk(a)
        else:
            yield a
