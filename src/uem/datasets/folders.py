"""The layout a user brings: DATA/<domain>/**/<image>. Only file lists — never labels.

Training reads data through `scan` alone, so nothing below the domain folder can leak into it as a
label; `uem.eval.labels` is the one place that turns sub-folders into categories, for evaluation.
"""

from __future__ import annotations

from pathlib import Path

from ..engine.errors import DataError
from ..engine.preprocess import IMAGE_EXTENSIONS


def _visible(p: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in p.relative_to(root).parts)


def list_images(folder: str | Path) -> list[Path]:
    """Every image below `folder` (any depth), sorted by relative path, hidden entries skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    found = [p for p in folder.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and _visible(p, folder)]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def list_domains(root: str | Path) -> list[str]:
    """Domain folder names directly under `root`, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such data directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: str | Path, domains: list[str] | None = None, min_domains: int = 2) -> dict[str, list[Path]]:
    """{domain: [image paths]} for DATA/<domain>/**; raises DataError with a one-line reason."""
    root = Path(root)
    names = list_domains(root)
    if domains:
        missing = [d for d in domains if d not in names]
        if missing:
            raise DataError(f"{root}: no domain folder(s) {', '.join(missing)}; found: {', '.join(names) or 'none'}")
        names = list(domains)
    out = {name: list_images(root / name) for name in names}
    empty = [n for n, files in out.items() if not files]
    out = {n: f for n, f in out.items() if f}
    if len(out) < min_domains:
        detail = f" (no images in: {', '.join(empty)})" if empty else ""
        raise DataError(f"{root}: need at least {min_domains} domain folders with images, "
                        f"found {len(out)}{detail}; expected DATA/<domain>/**/<image>")
    return out
