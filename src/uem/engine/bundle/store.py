"""The generation store: how a bundle directory changes atomically (one transaction helper).

A directory that exists cannot be replaced atomically by rename, so the bundle directory is a small
append-only store whose single mutable file is `manifest.json`:

    model.uem/manifest.json          maps every logical name to a physical path + size + sha256
    model.uem/g000007/...            an immutable generation: the files written by one commit
    model.uem/.lock                  advisory lock (fcntl.flock) serialising writers

Every write is one `transaction`: take the lock, create the next generation directory, write its
files, fsync them and the directories, then write `manifest.json.tmp-*`, fsync it and
`os.replace` it onto `manifest.json` (atomic on POSIX: atomic.replace_atomic), then fsync the
bundle directory. That replace is the commit: a crash before it leaves the old manifest (pointing
only at old, untouched files) — the old bundle; after it, the new one. An incremental add writes
only the changed files into the new generation; the new manifest keeps pointing at the unchanged
files of older generations (nothing copied). Garbage — generation directories referenced neither
by the new nor by the previous manifest, and `.tmp-*` leftovers of a crashed writer — is deleted by
the next successful commit (under the lock). Keeping the previous manifest's files means a reader
that read the old manifest a moment ago still finds its files; a reader that loses a longer race
sees a missing file and retries (reader.read_bundle). A flat bundle (physical path == logical
name) is read the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator

from ..atomic import exclusive_lock, fsync_dir, replace_atomic
from ..errors import BundleError
from .manifest import MANIFEST, FileRecord, Manifest, checksum, read_manifest, sha256_file

LOCK_FILE = ".lock"
DEFAULT_LOCK_TIMEOUT_S = 60.0
_GENERATION = re.compile(r"^g(\d{6,})$")


def current_manifest_or_none(root: Path) -> dict | None:
    """The committed manifest if it is readable; a corrupt one is simply replaced."""
    try:
        return read_manifest(root)
    except BundleError:
        return None


def current_generation(root: Path) -> int | None:
    m = current_manifest_or_none(root)
    return None if m is None else m.get("generation")


class Transaction:
    """One writer's turn, under the lock (see `transaction`): `begin` the next generation, write
    files into `dir`, `commit` a manifest that names them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation: int | None = None
        self.dir: Path | None = None
        self.committed = False
        self._old: dict | None = None
        self._undo: list[Callable[[], None]] = []

    def begin(self, old: dict | None) -> Path:
        """Create the next generation directory (after every one on disk and after `old`, the
        manifest being replaced, or None) and return it."""
        gens = [int(m.group(1)) for p in self.root.iterdir()
                if (m := _GENERATION.match(p.name)) and p.is_dir()]
        last = max([*gens, int((old or {}).get("generation", 0) or 0)], default=0)
        self.generation, self._old = last + 1, old
        self.dir = self.root / f"g{self.generation:06d}"
        self.dir.mkdir()
        return self.dir

    def on_abort(self, undo: Callable[[], None]) -> None:
        """Run `undo` if the transaction ends without its commit (e.g. drop the collections an
        external index created for it)."""
        self._undo.append(undo)

    def record(self, path: Path) -> FileRecord:
        """The manifest entry of a file written into this bundle."""
        return FileRecord(path.relative_to(self.root).as_posix(), path.stat().st_size, sha256_file(path))

    def commit(self, manifest: Manifest) -> dict:
        """fsync the generation, stamp the manifest, swap it in (the commit point), then collect
        garbage. Returns the manifest as written."""
        if self.dir is None:
            raise RuntimeError("commit before begin")
        for dirpath, _dirs, _files in os.walk(self.dir, topdown=False):
            fsync_dir(Path(dirpath))
        fsync_dir(self.root)
        manifest.generation = self.generation
        manifest.written_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        d = manifest.to_dict()
        d["checksum"] = checksum(d)
        replace_atomic(self.root / MANIFEST, json.dumps(d, indent=1, sort_keys=False, ensure_ascii=True,
                                                        allow_nan=False).encode("ascii"))
        self.committed = True
        _cleanup(self.root, _referenced_generations(d) | _referenced_generations(self._old))
        return d

    def _abort(self) -> None:
        """Not committed (the old manifest still rules): drop our half-written generation now."""
        if self.dir is None or current_generation(self.root) == self.generation:
            return
        shutil.rmtree(self.dir, ignore_errors=True)
        for undo in reversed(self._undo):
            undo()


@contextlib.contextmanager
def transaction(root: Path, lock_timeout: float, *, create: bool = False) -> Iterator[Transaction]:
    """Hold the writer lock of the bundle at `root` for one write (see the module docstring).

    `create`: `root` may be new or an empty directory (refused: a file, or a directory with
    foreign content); otherwise it must already hold a bundle (else read_manifest's BundleError).
    Whatever the body raises, a generation it began but did not commit is removed (and its
    `on_abort` callbacks run) before the exception propagates; so is one left uncommitted on a
    normal exit. Raises BundleError on a lock timeout.
    """
    if create:
        _prepare_root(root)
    elif not (root / MANIFEST).is_file():
        read_manifest(root)  # raises the precise "no such bundle / not a bundle" error
    with exclusive_lock(root / LOCK_FILE, lock_timeout):
        txn = Transaction(root)
        try:
            yield txn
        except BaseException:
            txn._abort()
            raise
        if not txn.committed:
            txn._abort()


def _owned_name(name: str) -> bool:
    return (name in (MANIFEST, LOCK_FILE) or bool(_GENERATION.match(name))
            or name.startswith(".tmp-") or name.startswith(MANIFEST + ".tmp-"))


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise BundleError(f"{root}: exists and is not a directory; refusing to overwrite it")
    if root.is_dir() and not (root / MANIFEST).exists():
        foreign = [p.name for p in root.iterdir() if not _owned_name(p.name)]
        if foreign:
            raise BundleError(f"{root}: directory is not empty and not a bundle; refusing to "
                              f"write into it (found {foreign[0]!r})")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BundleError(f"{root}: cannot create bundle directory ({e.strerror})") from None


def _referenced_generations(manifest: dict | None) -> set[str]:
    if not manifest:
        return set()
    try:
        return {str(e["path"]).split("/", 1)[0] for e in manifest["files"].values()}
    except (KeyError, TypeError, AttributeError):
        return set()


def _cleanup(root: Path, keep: set[str]) -> None:
    """Delete unreferenced generations and crashed writers' temporaries (caller holds the lock)."""
    for p in root.iterdir():
        if _GENERATION.match(p.name) and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".tmp-") or p.name.startswith(MANIFEST + ".tmp-"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    p.unlink()
                except OSError:
                    pass
