"""One domain's hnswlib index: build, check a file before hnswlib reads it, load, search.

Labels are row numbers into the domain's vectors/items. hnswlib trusts its file completely (a wrong
dim or a neighbour id out of range reads out of bounds and can kill the process), so
`check_index_file` parses the file format itself and compares it with the manifest first.
Concurrency: `search` on one index may run from many threads at once (hnswlib's search is
read-only; the ef is set once at load, never per query). `add` must not overlap searches of the
same object — the engine never does this: it extends a fresh copy and swaps it in.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import BundleError

# hnswlib 0.8 saveIndex header: 6 size_t, int maxlevel, uint32 enterpoint, 3 size_t, double, size_t
_HEADER = struct.Struct("<6Q i I 3Q d Q")
SPACES = ("ip", "cosine")


@dataclass(frozen=True)
class IndexHeader:
    max_elements: int
    count: int
    dim: int
    M: int
    max_level: int
    enterpoint: int


def _fail(path: Path, why: str) -> BundleError:
    return BundleError(f"{path}: corrupt hnsw index ({why})")


def check_index_file(path: Path, *, dim: int, count: int, M: int | None = None) -> IndexHeader:
    """Parse an hnswlib file without hnswlib and verify it is safe to load for (dim, count, M).

    Checks the header against the manifest, the exact file size, every link-list count, every
    neighbour id (< count, and present on the level it is linked at), the entry point's level and
    that the labels are exactly 0..count-1. Reads in chunks: memory stays small for big indexes.
    """
    try:
        with open(path, "rb") as f:
            return _check_stream(Path(path), f, os.fstat(f.fileno()).st_size, dim, count, M)
    except OSError as e:
        raise BundleError(f"{path}: cannot read index ({e.strerror})") from None


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _fail(path, f"truncated {what}")
    return data


def _check_stream(path: Path, f: BinaryIO, file_size: int, dim: int, count: int,
                  M: int | None) -> IndexHeader:
    (off_l0, max_el, cur, size_per, label_off, off_data, max_level, enter,
     max_m, max_m0, m, _mult, _efc) = _HEADER.unpack(_read_exact(f, _HEADER.size, path, "header"))
    links0 = 4 + 4 * max_m0
    if off_l0 != 0 or off_data != links0 or label_off != links0 + 4 * dim \
            or size_per != label_off + 8:
        raise _fail(path, f"layout does not match dim {dim}")
    if cur != count or max_el < cur:
        raise _fail(path, f"holds {cur} elements, manifest says {count}")
    if M is not None and m != M:
        raise _fail(path, f"M is {m}, manifest says {M}")
    if max_m != m or max_m0 != 2 * m or not 0 < m < 65536:
        raise _fail(path, "inconsistent M")
    if count and not (0 <= enter < count and 0 <= max_level < 64):
        raise _fail(path, "entry point out of range")
    if file_size < _HEADER.size + count * size_per + 4 * count:
        raise _fail(path, "truncated")
    labels = np.empty(count, dtype=np.uint64)
    chunk = max(1, (8 << 20) // size_per)
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        l0 = np.frombuffer(_read_exact(f, n * size_per, path, "level 0"), np.uint8).reshape(n, size_per)
        n_links = l0[:, :4].copy().view("<u4").reshape(-1) & 0xFFFF
        if np.any(n_links > max_m0):
            raise _fail(path, "level-0 link list too long")
        nbrs = l0[:, 4:links0].copy().view("<u4").reshape(n, max_m0)
        if np.any(nbrs[np.arange(max_m0)[None, :] < n_links[:, None]] >= count):
            raise _fail(path, "neighbour id out of range")
        labels[start:start + n] = l0[:, label_off:label_off + 8].copy().view("<u8").reshape(-1)
    if np.any(labels >= count) or np.any(np.bincount(labels.astype(np.int64), minlength=count) != 1):
        raise _fail(path, "labels are not 0..count-1")
    # The link-list section is all that is left: read it at once, walk it as uint32 words to find
    # the elements that have upper levels, then check all their links in one vectorised pass
    # (a read() per element and numpy calls per linked element made this most of Engine.open).
    per_level = 4 + 4 * max_m
    remaining = file_size - f.tell()
    if remaining > count * (4 + max_level * per_level):
        raise _fail(path, "unexpected trailing bytes")
    tail = f.read(remaining)
    if len(tail) != remaining or remaining % 4:
        raise _fail(path, "truncated link lists")
    words = np.frombuffer(tail, "<u4")
    walk = memoryview(tail).cast("I") if sys.byteorder == "little" else words.tolist()
    pos, n_words = 0, len(words)
    owners, starts, counts = [], [], []
    for i in range(count):
        if pos >= n_words:
            raise _fail(path, "truncated link lists")
        size = walk[pos]
        pos += 1
        if size:
            lv, rem = divmod(size, per_level)
            if rem or lv > max_level:
                raise _fail(path, "bad upper-level link list")
            owners.append(i)
            starts.append(pos)
            counts.append(lv)
            pos += size // 4
            if pos > n_words:
                raise _fail(path, "truncated link lists")
    if pos != n_words:
        raise _fail(path, "unexpected trailing bytes")
    levels = np.zeros(count, dtype=np.int64)
    if owners:
        lvs = np.asarray(counts, dtype=np.int64)
        levels[np.asarray(owners, dtype=np.int64)] = lvs
        row_of = np.repeat(np.arange(len(lvs)), lvs)                      # one row per (element, level)
        row_lv = np.arange(len(row_of)) - np.repeat(np.cumsum(lvs) - lvs, lvs) + 1
        row_at = np.asarray(starts, dtype=np.int64)[row_of] + (row_lv - 1) * (per_level // 4)
        rows = words[row_at[:, None] + np.arange(1 + max_m)[None, :]]
        n = rows[:, 0] & 0xFFFF
        if np.any(n > max_m):
            raise _fail(path, "upper-level link list too long")
        used = np.arange(max_m)[None, :] < n[:, None]
        ids, lv = rows[:, 1:][used].astype(np.int64), np.repeat(row_lv, n)
        if np.any(ids >= count) or np.any(levels[np.minimum(ids, count - 1)] < lv):
            raise _fail(path, "upper-level neighbour out of range")
    if count and levels[enter] != max_level:
        raise _fail(path, "entry point is not on the top level")
    return IndexHeader(max_el, cur, dim, m, max_level, enter)


class DomainIndex:
    """hnswlib index over one domain's unit vectors; score = cosine similarity."""

    def __init__(self, index, space: str, dim: int) -> None:
        self._index = index
        self.space = space
        self.dim = dim

    @property
    def count(self) -> int:
        return int(self._index.get_current_count())

    @classmethod
    def build(cls, vectors: np.ndarray, *, space: str, M: int, ef_construction: int,
              ef_search: int, seed: int = 0, threads: int = 1) -> "DomainIndex":
        """A new index holding `vectors` with labels 0..N-1 (deterministic for threads=1)."""
        import hnswlib

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        idx = hnswlib.Index(space=_check_space(space), dim=int(dim))
        idx.init_index(max_elements=max(n, 1), M=int(M), ef_construction=int(ef_construction),
                       random_seed=int(seed))
        if n:
            idx.add_items(vectors, np.arange(n), num_threads=threads)
        idx.set_ef(int(ef_search))
        return cls(idx, space, int(dim))

    @classmethod
    def load(cls, path: Path, *, space: str, dim: int, count: int, ef_search: int,
             M: int | None = None, extra_capacity: int = 0, checked: bool = False) -> "DomainIndex":
        """Load `path` after `check_index_file` (skipped only when the caller just did it)."""
        import hnswlib

        if not checked:
            check_index_file(path, dim=dim, count=count, M=M)
        idx = hnswlib.Index(space=_check_space(space), dim=int(dim))
        try:
            idx.load_index(str(path), max_elements=count + max(0, extra_capacity))
        except (RuntimeError, ValueError) as e:
            raise BundleError(f"{path}: hnswlib cannot load the index ({e})") from None
        idx.set_ef(int(ef_search))
        return cls(idx, space, int(dim))

    def save(self, path: Path) -> None:
        self._index.save_index(str(path))

    def add(self, vectors: np.ndarray, first_label: int, items=None, threads: int = 1) -> None:
        """Append rows labelled first_label.. (not concurrent with searches of this object).
        `items` is unused: the bundle's items.jsonl maps labels to items (backend.DomainBackend)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n = len(vectors)
        if not n:
            return
        need = first_label + n
        if need > self._index.get_max_elements():
            self._index.resize_index(need)
        self._index.add_items(vectors, np.arange(first_label, need), num_threads=threads)

    def close(self) -> None:
        """Nothing to release explicitly: the index is freed with the last reference."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(labels int64 [Q, k'], cosine float32 [Q, k']) with k' = min(k, count), best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(int(k), self.count)
        if k <= 0 or not len(queries):
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        try:
            labels, dist = self._index.knn_query(queries, k=k, num_threads=1)
        except RuntimeError:
            # hnswlib found fewer than k reachable neighbours (tiny or degenerate graphs): be exact.
            return self._exact(queries, k)
        return labels.astype(np.int64), (1.0 - dist).astype(np.float32)

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        stored = np.asarray(self._index.get_items(np.arange(self.count)), dtype=np.float32)
        sims = queries @ stored.T
        labels = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        return labels.astype(np.int64), np.take_along_axis(sims, labels, 1).astype(np.float32)


def _check_space(space: str) -> str:
    if space not in SPACES:
        raise BundleError(f"unsupported hnsw space {space!r} (expected one of {', '.join(SPACES)})")
    return space
