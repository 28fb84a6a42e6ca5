"""The contract between the bundle writers and an index kept outside the bundle (a vector database):
the write side. The read side, which backend answers a domain's searches, is backend.py.

Why a module of its own: the bundle format (bundle/) must not depend on Milvus or on the engine's
choice of backend (backend.py reads bundles, so the format importing it would be a cycle). Both
sides import this instead: the writers take an `ExternalIndex`, milvus.MilvusIndex is one, and
`connect` opens the implementation a committed manifest's "backend" record names, for the two
cases where a writer has none handed in (an add to an externally indexed domain, and dropping the
collections a rewrite replaced).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

from .errors import BundleError

if TYPE_CHECKING:
    from .bundle.manifest import HnswParams


class ExternalIndex(Protocol):
    """An index kept outside the bundle (a vector database, see milvus.MilvusIndex).

    The bundle still stores every domain's vectors + items (the source of truth); the manifest's
    "backend" record (what `create` returns) names where the index lives, and such domains have
    no index.bin. `create` runs before the commit (a failure drops what it made: `discard`);
    `append` runs under the writer lock before an add commits; `retire` drops what a committed
    re-export replaced; `close` ends the connection.
    """

    kind: str

    def create(self, root: Path, domains: Sequence[tuple[str, np.ndarray, list[dict]]],
               hnsw: "HnswParams", dim: int) -> dict: ...

    def append(self, record: dict, domain: str, vectors: np.ndarray, first_row: int,
               items: list[dict]) -> None: ...

    def discard(self, record: dict) -> None: ...

    def retire(self, old: dict | None, new: dict | None) -> None: ...

    def close(self) -> None: ...


def connect(record: dict) -> ExternalIndex:
    """An ExternalIndex connected to where a manifest's "backend" `record` lives (its own uri);
    the caller closes it. Raises UemError (unreachable, pymilvus missing) or ValueError (bad uri)."""
    if record.get("kind") == "milvus":
        from .milvus import MilvusIndex  # only a Milvus-backed bundle imports pymilvus

        return MilvusIndex(record["uri"])
    raise BundleError(f"unknown backend kind {record.get('kind')!r}")
