"""Durable file operations and the advisory writer lock (what makes bundle writes crash-safe)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import BinaryIO, Iterator

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


def replace_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    try:
        write_bytes_durable(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
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
