"""`Engine`: the torch-free retrieval API over one verified bundle.

Concurrency design: everything a query needs (encoder session, open-set rule, each domain's
hnswlib index + items) sits in one immutable snapshot; a query takes the current snapshot once and
uses only it, so it always sees one consistent state and needs no lock (an attribute read is
atomic). `add` and `reload` are serialised (a thread lock here, the bundle's file lock across
processes); `add` extends a *fresh* index loaded from the bundle — never one that queries are
reading — commits it to disk atomically, and only then publishes a new snapshot. So queries run in
parallel, adds never run concurrently with queries on the same hnswlib object, and what the engine
serves is always a state that is on disk.

Aligned retrieval (align.py; the per-query path is search.py): a query's raw embedding is aligned
with its SOURCE domain's transform (given, or inferred from the domains' Gaussians), mapped into the
target's space where the bundle learned a map, searched there, and the top candidates re-ranked by
CSLS when the bundle stores its statistics. `uem.eval.engine_scores` gives `uemctl eval` exactly
this scoring over whole sets, from `snapshot()`.

The public surface is small on purpose: open / close / reload (and `with`), facts (domains, info,
count, items, snapshot), embed, one query path (query = query_batch of one; images or precomputed
vectors), and add / add_vectors.
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .backend import Backends
from .bundle.reader import BundleInfo, read_bundle
from .bundle.store import DEFAULT_LOCK_TIMEOUT_S, current_generation
from .bundle.writers import append_to_domain
from .encoder import Encoder
from .errors import BundleError, ImageError
from .openset import OpenSetRule
from .preprocess import ImageSource, PreprocessSpec, preprocess, preprocess_batch
from .search import DomainState, QueryResult, Snapshot, domain_state

_OPEN_RETRIES = 3


def _is_path(x: object) -> bool:
    return isinstance(x, (str, os.PathLike))


class Engine:
    """Query and extend one bundle. Create with `Engine.open(path)`."""

    def __init__(self, snap: Snapshot, threads: int | None, fp32: bool) -> None:
        self._snap: Snapshot | None = snap
        self._threads = threads
        self._fp32 = fp32
        self._write_lock = threading.Lock()

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, threads: int | None = None, *, fp32: bool = False,
             backend: str | None = None, uri: str | None = None) -> "Engine":
        """Verify the bundle (manifest, checksums, headers) and load it.

        `threads`: onnxruntime intra-op threads (None: onnxruntime's default). `fp32`: use the
        bundle's optional fp32 encoder instead of the int8 one (parity checks). `backend`:
        "hnswlib" or "milvus" (None: what the bundle was exported for; asking for the other one is
        a BundleError); `uri`: the Milvus to use instead of the one the manifest records. Raises
        BundleError (missing, corrupt, tampered), BundleVersionError, BackendError (Milvus).
        """
        root = Path(path)
        backends = Backends(backend, uri)
        for attempt in range(_OPEN_RETRIES):
            info = read_bundle(root)
            try:
                return cls(cls._load(info, threads, fp32, None, backends), threads, fp32)
            except BundleError:
                # A concurrent writer may have committed and collected the files we verified.
                if attempt == _OPEN_RETRIES - 1 or current_generation(root) == info.generation:
                    backends.close()
                    raise
            except BaseException:
                backends.close()
                raise
        raise AssertionError("unreachable")

    @staticmethod
    def _load(info: BundleInfo, threads: int | None, fp32: bool, old: Snapshot | None,
              backends: Backends | None = None) -> Snapshot:
        """A snapshot of `info`, reusing from `old` whatever did not change on disk."""
        backends = old.backends if old is not None else (backends or Backends())
        backends.check(info)
        entry = info.encoder_fp32 if fp32 else info.encoder
        if entry is None:
            raise BundleError(f"{info.root}: the bundle has no fp32 encoder (export with --keep-fp32)")
        if old is not None and old.info.encoder.sha256 == info.encoder.sha256 and (
                not fp32 or old.info.encoder_fp32 == info.encoder_fp32):
            encoder = old.encoder
        else:
            encoder = Encoder(entry.path, threads=threads)
            encoder.check(info.preprocess.size, info.embed_dim)
        rule = OpenSetRule(info.prototypes, info.calibration)
        states = {}
        for name, d in info.domains.items():
            prev = old.states.get(name) if old is not None else None
            key = backends.key(info, name)
            if prev is not None and prev.index_key == key:
                states[name] = DomainState(name, prev.index, d.items, key)
            else:
                states[name] = DomainState(name, backends.open(info, name), d.items, key)
        return Snapshot(info, encoder, rule, states, backends)

    def reload(self) -> bool:
        """Pick up what another process committed (e.g. `uemctl index add`). True if changed."""
        with self._write_lock:
            old = self._current()
            info = read_bundle(old.info.root)
            if info.manifest == old.info.manifest:
                return False
            self._snap = self._load(info, self._threads, self._fp32, old)
            return True

    def close(self) -> None:
        """Release the indexes, the session and any Milvus connection; later calls raise BundleError."""
        snap, self._snap = self._snap, None
        if snap is not None:
            snap.backends.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _current(self) -> Snapshot:
        snap = self._snap
        if snap is None:
            raise BundleError("the engine is closed")
        return snap

    # -- facts -------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The current state, read-only and consistent: everything read from it (generation,
        counts, items, answers) belongs to one committed bundle state, whatever adds or reloads
        happen meanwhile. For callers that must report which state answered (the server) or
        score whole sets as a query would (`uem.eval.engine_scores`). BundleError once closed."""
        return self._current()

    @property
    def domains(self) -> list[str]:
        return list(self._current().states)

    def count(self, domain: str) -> int:
        return self._current().count(domain)

    def items(self, domain: str) -> Sequence[dict]:
        """The current state's items of `domain`: rows with "id", "path" and metadata, in index
        order, as a read-only sequence (no append, no assignment). Each row read is the caller's
        own dict: changing it changes nothing in the engine. The bundle's items come as the
        state's ItemList (it parses a fresh row at every read); any other state's items as a tuple
        of row copies. A later add publishes a new sequence; this one never changes."""
        from .items import ItemList

        items = domain_state(self._current(), domain).items
        if isinstance(items, ItemList):
            return items
        return tuple(dict(row) for row in items)

    def info(self) -> dict:
        """Everything `uemctl info` shows: domains, counts, model facts, parity, calibration."""
        return self._current().info.summary()

    # -- embedding and querying --------------------------------------------------------------
    def embed(self, images: Iterable[ImageSource]) -> np.ndarray:
        """Images -> unit float32 (N, D). Raises ImageError on the first bad image."""
        return self._current().embed(images)

    def query(self, image: ImageSource | None = None, domain: str | None = None, k: int = 10,
              source: str | None = None, no_reject: bool = False, *,
              vector: np.ndarray | None = None) -> QueryResult:
        """Find `image`'s matches in `domain`, or reject when its concept does not exist there;
        `vector=`: an embedding already computed (any length; normalised here) instead."""
        vectors = None if vector is None else np.asarray(vector, np.float32).reshape(1, -1)
        return self.query_batch(None if image is None else [image], domain, k, source, no_reject,
                                vectors=vectors)[0]

    def query_batch(self, images: Sequence[ImageSource] | None = None, domain: str | None = None,
                    k: int = 10, source: str | None = None, no_reject: bool = False, *,
                    vectors: np.ndarray | None = None) -> list[QueryResult]:
        """`query` for many images (one encoder batch), or for embeddings (`vectors=`, (N, D)).
        k larger than the domain is clamped. The target and source are checked before any image
        is read (UnknownDomainError); then ImageError on the first bad image."""
        return self._current().query_batch(images, domain, k, source, no_reject, vectors=vectors)

    # -- extending ---------------------------------------------------------------------------
    def add(self, domain: str, images: Sequence[ImageSource], *, ids: Sequence[str] | None = None,
            metadata: Sequence[dict] | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
            progress: Callable[[int, int], None] | None = None,
            on_bad: Callable[[ImageSource, ImageError], None] | None = None) -> int:
        """Embed `images` and append them to an existing `domain`, persisted atomically.

        Ids default to the image's absolute path (random for in-memory images); images whose id is
        already in the domain are skipped, so re-adding a folder is harmless. A new domain name is
        refused (UnknownDomainError): new domains need prototypes, which only export computes.
        Returns the number of rows added. A bad image raises ImageError and nothing is written,
        unless `on_bad` is given: then it is called with the image and its error, and the image is
        left out. `progress(done, total)` is called after each encoder batch.
        """
        snap = self._current()
        domain_state(snap, domain)
        images = list(images)
        if ids is not None and len(ids) != len(images):
            raise ValueError(f"{len(ids)} ids for {len(images)} images")
        if metadata is not None and len(metadata) != len(images):
            raise ValueError(f"{len(metadata)} metadata entries for {len(images)} images")
        vecs, kept = [], []
        step = snap.encoder.batch_size
        for start in range(0, len(images), step):
            rows = list(range(start, min(start + step, len(images))))
            x, ok = _pixels([images[i] for i in rows], snap.info.preprocess, on_bad)
            if len(x):
                vecs.append(snap.encoder.embed(x))
                kept += [rows[j] for j in ok]
            if progress is not None:
                progress(rows[-1] + 1, len(images))
        if not kept:
            return 0
        items = []
        for i in kept:
            img = images[i]
            path = str(Path(os.fsdecode(img)).resolve()) if _is_path(img) else f"<{type(img).__name__}>"
            item = dict(metadata[i]) if metadata is not None else {}
            item["path"] = path
            item["id"] = str(ids[i]) if ids is not None else (
                path if _is_path(img) else f"{domain}/{uuid.uuid4().hex}")
            items.append(item)
        return self.add_vectors(domain, np.concatenate(vecs), items, lock_timeout=lock_timeout)

    def add_vectors(self, domain: str, vectors: np.ndarray, items: Sequence[dict], *,
                    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> int:
        """Append embeddings made by this engine's encoder (items: dicts with "path", optional
        "id" and metadata) to `domain`; persisted atomically. Returns the number of rows added.

        Afterwards the engine serves the bundle as committed, including other processes' adds."""
        domain_state(self._current(), domain)
        with self._write_lock:
            old = self._current()
            added, info = append_to_domain(old.info.root, domain, vectors, list(items),
                                           encoder_sha256=old.info.encoder.sha256,
                                           lock_timeout=lock_timeout,
                                           external=old.backends.external(old.info))
            self._snap = self._load(info, self._threads, self._fp32, old)
        return added


def _pixels(images: Sequence[ImageSource], spec: PreprocessSpec,
            on_bad: Callable[[ImageSource, ImageError], None] | None) -> tuple[np.ndarray, list[int]]:
    """Preprocessed images and the positions of those kept: all, or ImageError on the first bad
    one; with `on_bad`, each bad one is reported to it and left out."""
    if on_bad is None:
        return preprocess_batch(images, spec), list(range(len(images)))
    arrays, ok = [], []
    for i, img in enumerate(images):
        try:
            arrays.append(preprocess(img, spec))
            ok.append(i)
        except ImageError as e:
            on_bad(img, e)
    x = np.stack(arrays) if arrays else np.zeros((0, 3, spec.size, spec.size), np.float32)
    return x, ok
