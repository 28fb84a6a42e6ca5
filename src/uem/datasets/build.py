"""What every benchmark-set builder shares: picking a subset, rendering in order, writing atomically.

A set is built in a hidden folder next to `out` (`.<name>.building-*`) and renamed into place only
when every file and, last of all, its manifest are on disk, so an interrupted build never looks
complete and leaves nothing behind. The manifest (`<out>/<format>.json`, with "format" and
"complete": true) is what marks a folder as a finished set of that format.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from ..engine.atomic import fsync_dir, write_bytes_durable
from ..engine.errors import DataError, MissingDependencyError

T = TypeVar("T")


INSTALL_HINT = "pip install 'uem[data]'"


def package_dir(dist: str, module: str, needed_for: str) -> Path:
    """Folder of an installed data package, without importing it; one clear line when it is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"{needed_for} needs the package {dist!r}, which is not installed; run: {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def require_modules(modules: dict[str, str], needed_for: str) -> None:
    """MissingDependencyError for the first of {import name: distribution} that is not installed."""
    for name, dist in modules.items():
        if importlib.util.find_spec(name) is None:
            raise MissingDependencyError(
                f"{needed_for} needs the package {dist!r}, which is not installed; run: {INSTALL_HINT}")


# --- selection --------------------------------------------------------------------------------

def check_known(wanted: Sequence[str], known: Sequence[str], what: str, where: str) -> None:
    """DataError naming every unknown `what` (with the closest known one) when `wanted` has any."""
    unknown = [s for s in wanted if s not in known]
    if not unknown:
        return
    hints = {s: difflib.get_close_matches(s, known, n=1) for s in unknown}
    said = ", ".join(f"{s!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for s, h in hints.items())
    raise DataError(f"unknown {what}(s): {said}; there are {len(known)} {what}s {where}, "
                    f"e.g. {', '.join(known[:4])}")


def first_per_group(items: Iterable[T], group_of: Callable[[T], str], limit: int | None) -> list[T]:
    """All items, or only the first `limit` of each group (in the order given)."""
    items = list(items)
    if limit is None:
        return items
    if limit < 1:
        raise DataError(f"--limit must be at least 1, got {limit}")
    seen: Counter[str] = Counter()
    kept = []
    for item in items:
        group = group_of(item)
        if seen[group] < limit:
            kept.append(item)
        seen[group] += 1
    return kept


def default_workers(workers: int | None) -> int:
    """Render processes: what was asked, else the CPU count, never more than 2 (a small machine)."""
    return max(1, min(workers or (os.cpu_count() or 1), 2))


# --- rendering --------------------------------------------------------------------------------

def run_tasks(tasks: Sequence, render: Callable, init: Callable, init_args: tuple, workers: int,
              progress: Callable[[], None]) -> Iterator:
    """Yield render(task) for every task, in task order, from this process or a small pool.

    `init(*init_args)` sets up each process; `render` and `init` must be module-level functions."""
    if workers <= 1:
        init(*init_args)
        for t in tasks:
            yield render(t)
            progress()
        return
    import multiprocessing as mp

    # spawn, not fork: the parent runs a progress-bar thread, and forked locks are a known hazard.
    with mp.get_context("spawn").Pool(workers, init, init_args) as pool:
        for r in pool.imap(render, tasks, chunksize=16):
            yield r
            progress()


class Progress:
    """A rich progress bar on stderr (or nothing); yields a callable that advances it by one."""

    def __init__(self, label: str, enabled: bool, total: int):
        self.label, self.enabled, self.total, self.bar = label, enabled, total, None

    def __enter__(self) -> Callable[[], None]:
        if not self.enabled:
            return lambda: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.bar.__enter__()
        task = self.bar.add_task("render", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False


# --- files ------------------------------------------------------------------------------------

def write_file(path: Path, data: bytes) -> None:
    """A new file in the build's fresh temp folder, fsynced (names are unique: a second write fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_durable(path, data)


def _a(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def manifest_head(fmt: str, version: int, selection: dict) -> dict:
    """The keys every set's manifest begins with (read_manifest and check_target read them)."""
    return {"format": fmt, "format_version": version, "complete": True, "selection": selection}


def read_manifest(out: Path, fmt: str) -> dict | None:
    """The manifest of a complete `fmt` set at `out` (`<out>/<fmt>.json`), or None when it is not one."""
    try:
        m = json.loads((Path(out) / f"{fmt}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(m, dict) and m.get("format") == fmt and m.get("complete") is True:
        return m
    return None


def check_target(out: Path, fmt: str, force: bool, selection: dict) -> dict | None:
    """Refuse to overwrite what is not ours; return the existing manifest when already built."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return None
    here, home = Path.cwd().resolve(), Path.home().resolve()
    real = out.resolve()
    if real == Path(real.anchor) or real in (here, home) or real in here.parents or real in home.parents:
        raise DataError(f"{out}: refusing to replace this directory (it holds the current or home "
                        "directory); choose a dedicated output folder")
    existing = read_manifest(out, fmt)
    if force:
        return None
    if existing is None:
        raise DataError(f"{out}: directory is not empty and is not {_a(fmt)} set; "
                        "choose an empty or new folder, or pass --force to replace it")
    if existing.get("selection") != selection:
        raise DataError(f"{out}: holds {_a(fmt)} set built with a different selection "
                        f"({existing.get('selection')}); pass --force to rebuild it")
    return existing


def versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution ('not installed' when absent)."""
    v = {}
    for name in packages:
        try:
            v[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            v[name] = "not installed"
    return v


@contextmanager
def building(out: Path) -> Iterator[Path]:
    """A fresh hidden folder next to `out` to build in; removed again if the build does not finish."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: Path, out: Path, fmt: str, manifest: dict) -> None:
    """Flush the built files, write the manifest (the completion marker) last, rename the set in."""
    for d in sorted(p for p in tmp.rglob("*") if p.is_dir()):
        fsync_dir(d)
    write_file(tmp / f"{fmt}.json", (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
    fsync_dir(tmp)
    swap_in(tmp, out)


def swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished set into place; an old folder is moved aside first and removed after."""
    old = None
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
    elif out.is_dir():
        out.rmdir()
    os.rename(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
