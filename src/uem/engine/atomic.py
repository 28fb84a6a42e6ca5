"""Durable file operations and the advisory writer lock: every crash-safe write in uem goes through here.

Bundle writes, training outputs (config, encoder, checkpoint, prototypes, loss plot), contact sheets
and the demo's data copy all use these helpers, so "temp file, fsync, rename" is written once:
`replace_atomic` for bytes, `replacing` for writers that want a file name (torch.save, savefig, PIL),
`replace_files` for writers that fill a folder, `new_folder` for a folder that appears whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from .errors import BundleError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: serialise with msvcrt instead
    fcntl = None  # type: ignore[assignment]
    import msvcrt


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry table (new names, renames); a no-op where directories can't be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def durable_file(path: Path) -> Iterator[BinaryIO]:
    """A new file (refused if it exists) to write into; flushed and fsynced when the block ends
    (the caller fsyncs the directory once for many files)."""
    with open(path, "xb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_bytes_durable(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (the caller fsyncs the directory once for many files)."""
    with durable_file(path) as f:
        f.write(data)


@contextlib.contextmanager
def replacing(path: Path, suffix: str = "") -> Iterator[Path]:
    """A temp path next to `path` for a writer that wants a file name; when the block ends, what
    it wrote there is fsynced and renamed onto `path` (readers see the old or the new file, never a
    mix); if the block raises, the temp file goes. `suffix` ends the temp name, for writers that
    choose the format by extension (savefig, np.savez). The temp name is `NAME.tmp-PID-NS...`."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}{suffix}")
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def replace_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a mix."""
    with replacing(path) as tmp, open(tmp, "xb") as f:
        f.write(data)


def replace_files(folder: Path, write: Callable[[Path], None]) -> None:
    """For a writer that saves several files into a folder: what `write(tmp)` puts in a fresh temp
    folder inside `folder` replaces the same-named files of `folder`, each file atomically (fsynced,
    then renamed); the temp folder is removed either way."""
    folder = Path(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-files."))
    try:
        write(tmp)
        for f in sorted(tmp.iterdir()):
            fsync_file(f)
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(folder)


@contextlib.contextmanager
def new_folder(path: Path) -> Iterator[Path]:
    """An empty temp folder next to `path` (which must not exist) to fill; renamed to `path` when
    the block ends, so `path` never exists half made; removed if the block raises. One builder at
    a time: the temp folder (`NAME.tmp`) a killed builder left is cleared first."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path, timeout: float) -> Iterator[None]:
    """Hold an advisory exclusive lock on `lock_path`, waiting up to `timeout` seconds.

    flock locks die with the process, so a writer killed with -9 never leaves a stale lock.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise BundleError(f"{lock_path.parent}: cannot create lock file ({e.strerror})") from None
    try:
        deadline = time.monotonic() + max(0.0, timeout)
        delay = 0.01
        while True:
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                else:  # pragma: no cover
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise BundleError(
                        f"{lock_path.parent}: another process is writing this bundle "
                        f"(waited {timeout:g} s for the lock)") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            else:  # pragma: no cover
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)
