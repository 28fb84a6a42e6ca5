"""Where a domain's nearest-neighbour search runs: hnswlib files in the bundle, or Milvus (the
read side; what the bundle writers hand an index kept outside the bundle is external_index.py).

Why an interface: the engine's query path (top-k, then the open-set decision on the top-1 cosine)
must be the same whatever holds the index. A `DomainBackend` answers `search` with the bundle's
row numbers and cosine similarities; `add` appends rows first_row..; `count`; `close`. The hnswlib
implementation is `index.DomainIndex`, the Milvus one `milvus.MilvusDomain` (imported lazily, so
`import uem.engine` never imports pymilvus).

`Backends` is what an Engine holds: it opens each domain of a verified bundle with the backend the
manifest names (or the one the caller asks for, which must match) and owns the Milvus connection.
`check_choice` is the one check of a requested backend / uri (the CLI's options use it too).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .bundle.reader import BundleInfo
from .errors import BundleError

HNSWLIB = "hnswlib"
MILVUS = "milvus"
BACKENDS = (HNSWLIB, MILVUS)


class DomainBackend(Protocol):
    @property
    def count(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [Q, k'], cosine float32 [Q, k']), k' = min(k, count), best first;
        row -1 pads a query that got fewer hits."""

    def add(self, vectors: np.ndarray, first_row: int, items: Sequence[dict] | None = None) -> None: ...

    def close(self) -> None: ...


def check_choice(backend: str | None, uri: str | None, *, names: tuple[str, str] = ("backend", "uri=")) -> None:
    """ValueError unless `backend` is None or one of BACKENDS, and a `uri` comes without hnswlib.
    `names`: what the messages call the two settings (the CLI passes "--backend", "--uri")."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"{names[0]} must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if uri is not None and backend == HNSWLIB:
        raise ValueError(f"{names[1]} is for the milvus backend")


def bundle_backend(info: BundleInfo) -> str:
    """The backend the bundle was exported for."""
    return MILVUS if info.backend else HNSWLIB


class Backends:
    """Opens the domains of successive snapshots of one bundle; one Milvus connection at most."""

    def __init__(self, backend: str | None = None, uri: str | None = None) -> None:
        check_choice(backend, uri)
        self.backend = backend
        self.uri = uri
        self._store = None

    def check(self, info: BundleInfo) -> str:
        """The backend serving `info`; BundleError when the caller asked for another one."""
        actual = bundle_backend(info)
        wanted = self.backend or (MILVUS if self.uri is not None else None)
        if wanted is not None and wanted != actual:
            how = ("it was exported for Milvus (--to); open it with backend='milvus'" if actual == MILVUS
                   else "it has no Milvus collections; export it with --to URI to serve from Milvus")
            raise BundleError(f"{info.root}: cannot serve with {wanted}: {how}")
        return actual

    def key(self, info: BundleInfo, name: str) -> str:
        """Equal keys in two snapshots: the domain's backend object can be reused as is."""
        d = info.domain(name)
        if d.index is not None:
            return f"hnsw:{d.index.sha256}"
        return f"milvus:{info.backend['collections'][name]}:{d.count}"

    def open(self, info: BundleInfo, name: str) -> DomainBackend:
        if self.check(info) == HNSWLIB:
            return info.load_index(name)
        from .milvus import MilvusDomain

        store = self.store(info)
        d = info.domain(name)
        collection = info.backend["collections"][name]
        store.check(collection, d.count, info.embed_dim)
        return MilvusDomain(store, collection, d.count, info.embed_dim, info.hnsw.ef_search)

    def store(self, info: BundleInfo):
        """The Milvus connection (opened on first use): uri= if given, else the manifest's."""
        from .milvus import MilvusStore, normalise_uri

        uri = normalise_uri(self.uri if self.uri is not None else info.backend["uri"])
        if self._store is None or self._store.uri != uri:
            self._store = MilvusStore(uri)
        return self._store

    def external(self, info: BundleInfo):
        """The bundle writer's ExternalIndex for `info` (None for hnswlib bundles)."""
        if self.check(info) == HNSWLIB:
            return None
        from .milvus import MilvusIndex

        return MilvusIndex(self.store(info).uri, store=self.store(info))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
