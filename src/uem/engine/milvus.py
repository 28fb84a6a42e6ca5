"""Serving a bundle's domains from Milvus: one collection per domain, HNSW over inner product.

Why a vector database: when a domain outgrows one machine's memory or several query servers must
share one index, the index belongs in a service built for it. The bundle stays the source of truth
(vectors.npy + items.jsonl are still written, so a domain can be re-indexed and the open-set radii
reproduced); Milvus holds the searchable copy. The encoder stays local (onnxruntime).

Mapping: the primary key `id` of a row is its row number in the bundle's vectors/items, exactly
like an hnswlib label, so hits resolve to the bundle's items with the same code. `item_id` and
`path` are stored too, for anyone reading the collection directly. A search is restricted to
`id < count` of the engine's snapshot: rows another process added (or a crashed add left behind)
stay invisible until the bundle that knows them is reloaded; a later add upserts over such rows.

Inner product over unit vectors is the cosine similarity — the very score the hnswlib backend
returns — so the open-set rule sees the same numbers. pymilvus is imported only here and only when
a Milvus-backed bundle is used: `import uem.engine` never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import BackendError, MissingDependencyError

KIND = "milvus"
TOKEN_ENV = "UEM_MILVUS_TOKEN"          # credentials never go into the manifest
VECTOR_FIELD = "vector"
MAX_VARCHAR = 65535                     # Milvus' VARCHAR limit (bytes)
MAX_TOPK = 16384                        # Milvus' limit on `limit` and on queries per request
INSERT_BATCH = 2000
SEARCH_BATCH = 1024
INDEX_WAIT_S = 600.0
_COLLECTION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
# Milvus Lite's in-process gRPC server keeps grpc's default ping policy (at most one ping per 5 min
# without data), while pymilvus pings every 10 s: after ~1.5 idle minutes the server answers
# GOAWAY "too_many_pings" and the connection can fail to recover (seen during a long export).
# Keepalive guards against dead network peers; an in-process server has none, so it is off.
_LITE_GRPC = {"grpc_options": {"grpc.keepalive_time_ms": 2 ** 31 - 1,
                               "grpc.keepalive_permit_without_calls": 0}}


def is_lite(uri: str) -> bool:
    """A Milvus Lite database: a local path ending in .db (pymilvus starts it in-process)."""
    return "://" not in uri and uri.endswith(".db")


def normalise_uri(uri: str) -> str:
    """What the manifest records: milvus://HOST:PORT (or http[s]://...) as given, or the absolute
    path of a Milvus Lite `*.db` file. Raises ValueError for anything else."""
    uri = str(uri).strip()
    if uri.startswith(("milvus://", "http://", "https://")):
        if not uri.split("://", 1)[1].strip("/"):
            raise ValueError(f"{uri!r}: no host (expected milvus://HOST:PORT)")
        return uri.rstrip("/")
    if is_lite(uri):
        path = Path(uri).expanduser().resolve()
        if not path.parent.is_dir():
            raise ValueError(f"{uri}: directory {path.parent} does not exist")
        return str(path)
    raise ValueError(f"{uri!r}: expected milvus://HOST:PORT, http(s)://HOST:PORT or a Milvus Lite "
                     "file path ending in .db")


def _client_uri(uri: str) -> str:
    return "http://" + uri.split("://", 1)[1] if uri.startswith("milvus://") else uri


def _import_pymilvus():
    try:
        import pymilvus
    except ImportError:
        raise MissingDependencyError("serving from Milvus needs pymilvus: pip install 'uem[milvus]'") from None
    return pymilvus


def collection_names(prefix: str, domains: Sequence[str]) -> dict[str, str]:
    """Collection per domain: <prefix>_<domain with non-[A-Za-z0-9_] as '_'>, made unique."""
    out: dict[str, str] = {}
    for i, d in enumerate(domains):
        name = f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', d)}"[:255]
        if name in out.values():
            name = f"{name[:248]}_{i}"
        out[d] = name
    return out


def new_prefix(bundle: Path) -> str:
    """uem_<bundle name>_<8 hex>: readable, and distinct for every export (an export never
    overwrites the collections a running server may still be reading)."""
    stem = re.sub(r"[^A-Za-z0-9_]", "_", Path(bundle).resolve().name.rsplit(".", 1)[0])[:40]
    return f"uem_{stem or 'bundle'}_{uuid.uuid4().hex[:8]}"


def _text(s: str, what: str) -> str:
    """A valid UTF-8 copy for Milvus (undecodable file-name bytes become U+FFFD)."""
    t = s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if len(t.encode("utf-8")) > MAX_VARCHAR:
        raise ValueError(f"{what} longer than Milvus' {MAX_VARCHAR}-byte limit: {t[:80]}...")
    return t


class MilvusStore:
    """One connection to one Milvus (server or Lite file): creates, fills, searches and drops
    uem's collections. Thread-safe (pymilvus' client is)."""

    def __init__(self, uri: str, *, timeout: float | None = None) -> None:
        pymilvus = _import_pymilvus()
        self.uri = normalise_uri(uri)
        try:
            with _quiet_lite_start():
                self._client = pymilvus.MilvusClient(uri=_client_uri(self.uri),
                                                     token=os.environ.get(TOKEN_ENV, ""), timeout=timeout,
                                                     **(_LITE_GRPC if is_lite(self.uri) else {}))
        except Exception as e:  # pymilvus raises its own exceptions and grpc's
            hint = (" (Milvus Lite serves one process at a time: is another process using it?)"
                    if is_lite(self.uri) else "")
            raise BackendError(f"cannot connect to Milvus at {self.uri}: {_why(e)}{hint}") from None

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise BackendError(f"Milvus at {self.uri}: {what} failed: {_why(e)}") from None

    # -- writing -------------------------------------------------------------------------------
    def create(self, collection: str, dim: int, index: dict) -> None:
        """An empty collection (id, vector, item_id, path) with an HNSW/IP index (finish_bulk
        loads it once filled)."""
        if not _COLLECTION.match(collection):
            raise ValueError(f"invalid Milvus collection name {collection!r}")
        pymilvus = _import_pymilvus()
        c = self._client
        schema = c.create_schema(auto_id=False, enable_dynamic_field=False,
                                 description="uem domain: id = row in the bundle's vectors.npy")
        schema.add_field("id", pymilvus.DataType.INT64, is_primary=True)
        schema.add_field(VECTOR_FIELD, pymilvus.DataType.FLOAT_VECTOR, dim=int(dim))
        schema.add_field("item_id", pymilvus.DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("path", pymilvus.DataType.VARCHAR, max_length=MAX_VARCHAR)
        params = c.prepare_index_params()
        params.add_index(field_name=VECTOR_FIELD, index_type=index["type"], metric_type=index["metric"],
                         params={"M": int(index["M"]), "efConstruction": int(index["efConstruction"])})
        if self._call("has_collection", c.has_collection, collection):
            raise BackendError(f"Milvus at {self.uri}: collection {collection} already exists")
        # Strong consistency: a query right after an add sees the added rows. The index is created
        # without waiting (pymilvus' wait path needs an RPC Milvus Lite lacks); finish_bulk waits.
        self._call("create_collection", c.create_collection, collection, schema=schema,
                   consistency_level="Strong")
        self._call("create_index", c.create_index, collection, params, sync=False)

    def upsert(self, collection: str, vectors: np.ndarray, first_row: int, items: Sequence[dict],
               progress: Callable[[int], None] | None = None, *, fresh: bool = False) -> None:
        """Write rows first_row.. (upsert: re-writing rows a crashed add left behind is harmless;
        `fresh`: the collection was just created, plain inserts — cheaper on a server)."""
        write = self._client.insert if fresh else self._client.upsert
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(items) != len(vectors):
            raise ValueError(f"{len(items)} items for {len(vectors)} vectors")
        for start in range(0, len(vectors), INSERT_BATCH):
            rows = [{"id": first_row + i, VECTOR_FIELD: vectors[i],
                     "item_id": _text(items[i]["id"], "item id"), "path": _text(items[i]["path"], "path")}
                    for i in range(start, min(start + INSERT_BATCH, len(vectors)))]
            self._call("insert" if fresh else "upsert", write, collection, rows)
            if progress is not None:
                progress(len(rows))

    def finish_bulk(self, collection: str, wait_s: float = INDEX_WAIT_S) -> None:
        """Seal the bulk-loaded rows into indexed segments and wait (bounded) for the index."""
        self._call("flush", self._client.flush, collection)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            info = self._call("describe_index", self._client.describe_index, collection, VECTOR_FIELD)
            if not info or int(info.get("pending_index_rows", 0) or 0) == 0:
                break
            time.sleep(0.5)
        self._call("load_collection", self._client.load_collection, collection)

    def drop(self, collections: Sequence[str]) -> None:
        for name in collections:
            if self._call("has_collection", self._client.has_collection, name):
                self._call("drop_collection", self._client.drop_collection, name)

    # -- reading -------------------------------------------------------------------------------
    def check(self, collection: str, count: int, dim: int) -> None:
        """The collection exists, has the bundle's dim and every row id < count; loaded."""
        c = self._client
        if not self._call("has_collection", c.has_collection, collection):
            raise BackendError(f"Milvus at {self.uri} has no collection {collection} "
                               "(dropped, or another server? pass uri=)")
        desc = self._call("describe_collection", c.describe_collection, collection)
        dims = [int((f.get("params") or {}).get("dim", 0)) for f in desc.get("fields", [])
                if f.get("name") == VECTOR_FIELD]
        if dims != [int(dim)]:
            raise BackendError(f"Milvus collection {collection}: vector dim {dims}, bundle has {dim}")
        self._call("load_collection", c.load_collection, collection)
        # count(*) (exact, unlike the statistics, which may lag unflushed rows on a server)
        res = self._call("count", c.query, collection, filter=f"id < {int(count)}",
                         output_fields=["count(*)"], consistency_level="Strong")
        stored = int(res[0]["count(*)"]) if res else 0
        if stored != count:
            raise BackendError(f"Milvus collection {collection} holds {stored} of the bundle's "
                               f"{count} rows")

    def search(self, collection: str, queries: np.ndarray, k: int, count: int,
               ef: int, consistency: str = "Strong") -> tuple[np.ndarray, np.ndarray]:
        """(rows int64 [Q, k], inner products float32 [Q, k]) best first; -1 / -inf pads a query
        that got fewer than k hits. Only rows < count are searched. `consistency`: Milvus'
        consistency level for this search (MilvusDomain says which one and why)."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        rows = np.full((len(q), k), -1, np.int64)
        sims = np.full((len(q), k), -np.inf, np.float32)
        params = {"metric_type": "IP", "params": {"ef": max(int(ef), k)}}
        for start in range(0, len(q), SEARCH_BATCH):
            part = q[start:start + SEARCH_BATCH]
            res = self._call("search", self._client.search, collection, data=list(part), limit=k,
                             filter=f"id < {int(count)}", output_fields=["id"], search_params=params,
                             anns_field=VECTOR_FIELD, consistency_level=consistency)
            for i, hits in enumerate(res):
                for j, h in enumerate(list(hits)[:k]):
                    rows[start + i, j] = int(h["id"])
                    sims[start + i, j] = float(h["distance"])
        return rows, sims

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing twice or a dead server: nothing left to release
            pass


@contextlib.contextmanager
def _quiet_lite_start():
    """Milvus Lite logs a full traceback when it cannot start (e.g. another process holds the
    .db); the caller turns the failure into one line, so that log is muted meanwhile."""
    log = logging.getLogger("milvus_lite.server_manager")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _why(e: BaseException) -> str:
    msg = getattr(e, "message", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())[:300]


@dataclass(frozen=True)
class MilvusDomain:
    """A domain served by one Milvus collection, as of one bundle snapshot (its row count)."""

    store: MilvusStore
    collection: str
    count: int
    dim: int
    ef_search: int
    # set once a Strong search of this snapshot returned: its rows are then known to be visible
    _seen: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Same contract as the hnswlib DomainIndex: (rows [Q, k'], cosine [Q, k']) with
        k' = min(k, count), best first; a row of -1 (score -inf) pads a short answer.

        Why two consistency levels: a Strong search waits for the server's next time tick (200 ms
        on a default Milvus server: benchmarks/RESULTS.md, "Scale-out: Milvus backend"), which is
        what guarantees that rows committed just before this snapshot are searched. Once one
        Strong search of the snapshot has returned, the server has applied everything up to then,
        rows below `count` included, and a Bounded search (no wait) finds them too; the filter
        `id < count` hides anything newer."""
        queries = np.atleast_2d(np.asarray(queries, np.float32))
        k = min(int(k), self.count, MAX_TOPK)
        if k <= 0 or not len(queries):
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        seen = self._seen.is_set()
        out = self.store.search(self.collection, queries, k, self.count, self.ef_search,
                                "Bounded" if seen else "Strong")
        if not seen:
            self._seen.set()
        return out

    def add(self, vectors: np.ndarray, first_row: int, items: Sequence[dict] | None = None) -> None:
        if items is None:
            raise ValueError("a Milvus domain stores item ids and paths: pass items")
        self.store.upsert(self.collection, vectors, first_row, items)

    def close(self) -> None:
        """The connection belongs to the engine's store; a view has nothing of its own."""


def index_record(hnsw) -> dict:
    """The Milvus index the manifest records: HNSW, inner product, the bundle's M / ef."""
    return {"type": "HNSW", "metric": "IP", "M": int(hnsw.M),
            "efConstruction": int(hnsw.ef_construction), "ef": int(hnsw.ef_search)}


class MilvusIndex:
    """The bundle writer's ExternalIndex for Milvus (see external_index.ExternalIndex): creates one
    collection per domain at export, appends on `index add`, drops what an export replaced."""

    kind = KIND

    def __init__(self, uri: str, *, prefix: str | None = None, store: MilvusStore | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.store = store or MilvusStore(uri)
        self.uri = self.store.uri
        self.prefix = prefix
        self.progress = progress

    def create(self, root: Path, domains: Sequence[tuple[str, np.ndarray, list[dict]]], hnsw,
               dim: int) -> dict:
        names = collection_names(self.prefix or new_prefix(root), [d for d, _, _ in domains])
        index = index_record(hnsw)
        record = {"kind": KIND, "uri": self.uri, "index": index, "collections": names}
        try:
            for d, vecs, items in domains:
                self.store.create(names[d], dim, index)
                done = [0]

                def tick(n: int, d=d, total=len(vecs)) -> None:
                    done[0] += n
                    if self.progress is not None:
                        self.progress(d, done[0], total)

                self.store.upsert(names[d], vecs, 0, items, progress=tick, fresh=True)
                self.store.finish_bulk(names[d])
        except BaseException:
            self.discard(record)
            raise
        return record

    def append(self, record: dict, domain: str, vectors: np.ndarray, first_row: int,
               items: list[dict]) -> None:
        self.store.upsert(record["collections"][domain], vectors, first_row, items)

    def discard(self, record: dict) -> None:
        """Drop what `create` made (the export did not commit). Best effort."""
        try:
            self.store.drop(list(record["collections"].values()))
        except BackendError:
            pass

    def retire(self, old: dict | None, new: dict | None) -> None:
        """After a commit: drop the replaced bundle's collections on this same Milvus."""
        if not old or old.get("kind") != KIND or old.get("uri") != self.uri:
            return
        keep = set((new or {}).get("collections", {}).values())
        try:
            self.store.drop([c for c in old.get("collections", {}).values() if c not in keep])
        except BackendError:
            pass

    def close(self) -> None:
        self.store.close()
