"""`Engine`: the torch-free retrieval API over one verified bundle.

Concurrency design: every domain's searchable state (hnswlib index + items) is an immutable
snapshot; a query takes the current snapshot once and uses only it, so it always sees one
consistent index state and needs no lock. `add` is serialised (a thread lock here, the bundle's
file lock across processes), extends a *fresh* index loaded from the bundle — never the one queries
are reading — commits it to disk atomically, and only then swaps the new snapshot in. So queries
run in parallel, adds never run concurrently with queries on the same hnswlib object, and what
the engine serves is always what is on disk.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .bundle import (DEFAULT_LOCK_TIMEOUT_S, BundleInfo, _current_generation, append_to_domain,
                     read_bundle)
from .encoder import Encoder
from .errors import BundleError, UnknownDomainError
from .index import DomainIndex
from .openset import OpenSetRule
from .preprocess import ImageSource, preprocess, preprocess_batch

_OPEN_RETRIES = 3


@dataclass(frozen=True)
class Hit:
    id: str
    path: str
    score: float  # cosine similarity, higher is closer


@dataclass(frozen=True)
class QueryResult:
    accepted: bool
    reason: str
    score: float          # open-set score: > 1 rejects (see openset.py); lower = more confident
    hits: list[Hit]
    source: str | None    # the query's domain (given, or inferred from the prototypes)
    domain: str = ""      # the target domain searched

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _DomainState:
    """Immutable searchable state of one domain."""

    name: str
    index: DomainIndex
    items: list[dict]
    index_sha256: str

    @property
    def count(self) -> int:
        return len(self.items)


def _is_path(x: object) -> bool:
    return isinstance(x, (str, os.PathLike))


class Engine:
    """Query and extend one bundle. Create with `Engine.open(path)`."""

    def __init__(self, info: BundleInfo, encoder: Encoder, states: dict[str, _DomainState],
                 threads: int | None) -> None:
        self._info = info
        self._encoder = encoder
        self._states = states
        self._rule = OpenSetRule(info.prototypes, info.calibration)
        self._threads = threads
        self._add_lock = threading.Lock()

    # -- opening -----------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike, threads: int | None = None) -> "Engine":
        """Verify the bundle (manifest, checksums, headers) and load it.

        `threads`: onnxruntime intra-op threads (None: onnxruntime's default). Raises BundleError
        (missing, corrupt, tampered) or BundleVersionError.
        """
        root = Path(path)
        for attempt in range(_OPEN_RETRIES):
            info = read_bundle(root)
            try:
                encoder = Encoder(info.encoder.path, threads=threads)
                encoder.check(info.preprocess.size, info.embed_dim)
                states = {name: cls._load_state(info, name) for name in info.domains}
                return cls(info, encoder, states, threads)
            except BundleError:
                # A concurrent writer may have committed and collected the files we verified.
                if attempt == _OPEN_RETRIES - 1 or _current_generation(root) == info.generation:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _load_state(info: BundleInfo, name: str) -> _DomainState:
        d = info.domains[name]
        return _DomainState(name, info.load_index(name), d.items, d.index.sha256)

    def close(self) -> None:
        """Drop the loaded indexes and session (the engine is unusable afterwards)."""
        self._states = {}

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- facts -------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._info.root

    @property
    def domains(self) -> list[str]:
        return list(self._states)

    @property
    def embed_dim(self) -> int:
        return self._info.embed_dim

    @property
    def preprocess_spec(self):
        return self._info.preprocess

    def count(self, domain: str) -> int:
        return self._state(domain).count

    def info(self) -> dict:
        """Everything `uemctl info` shows: domains, counts, model facts, parity, calibration."""
        return self._info.summary()

    def check_domains(self, domain: str, source: str | None = None) -> None:
        """Raise UnknownDomainError now for a bad target or source (before any image is read)."""
        self._state(domain)
        self._check_source(source)

    # -- embedding ---------------------------------------------------------------------------
    def preprocess(self, image: ImageSource) -> np.ndarray:
        """One image -> float32 (3, S, S) as the encoder expects. Raises ImageError."""
        return preprocess(image, self._info.preprocess)

    def embed_tensors(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (N, 3, S, S) -> unit float32 (N, D)."""
        return self._encoder.embed(x)

    def embed(self, images: Iterable[ImageSource]) -> np.ndarray:
        """Images -> unit float32 (N, D). Raises ImageError on the first bad image."""
        return self.embed_tensors(preprocess_batch(images, self._info.preprocess))

    # -- querying ----------------------------------------------------------------------------
    def _state(self, domain: str) -> _DomainState:
        states = self._states
        try:
            return states[domain]
        except KeyError:
            raise UnknownDomainError(domain, list(states)) from None

    def _check_source(self, source: str | None) -> None:
        if source is not None and source not in self._states and source not in self._rule.graph.domains:
            raise UnknownDomainError(source, sorted(set(self._states) | set(self._rule.graph.domains)))

    def query(self, image: ImageSource, domain: str, k: int = 10, source: str | None = None,
              no_reject: bool = False) -> QueryResult:
        """Find `image`'s matches in `domain`, or reject when its concept does not exist there."""
        return self.query_batch([image], domain, k, source=source, no_reject=no_reject)[0]

    def query_batch(self, images: Sequence[ImageSource], domain: str, k: int = 10,
                    source: str | None = None, no_reject: bool = False) -> list[QueryResult]:
        """`query` for many images (one encoder batch). Raises ImageError on the first bad image."""
        self._state(domain)
        self._check_source(source)
        return self.query_vectors(self.embed(images), domain, k, source=source, no_reject=no_reject)

    def query_vector(self, vec: np.ndarray, domain: str, k: int = 10, source: str | None = None,
                     no_reject: bool = False) -> QueryResult:
        """`query` for an embedding already computed (any length; normalised here)."""
        return self.query_vectors(np.asarray(vec, np.float32).reshape(1, -1), domain, k,
                                  source=source, no_reject=no_reject)[0]

    def query_vectors(self, vecs: np.ndarray, domain: str, k: int = 10, source: str | None = None,
                      no_reject: bool = False) -> list[QueryResult]:
        """`query` for embeddings (N, D). k larger than the domain is clamped."""
        if int(k) < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        state = self._state(domain)          # one snapshot for the whole batch
        self._check_source(source)
        vecs = np.asarray(vecs, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[1] != self.embed_dim:
            raise ValueError(f"query vectors must be (N, {self.embed_dim}), got {vecs.shape}")
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        labels, sims = state.index.search(vecs, k)
        out = []
        for q, lab, sim in zip(vecs, labels, sims):
            d = self._rule.decide(q, domain, float(sim[0]) if len(sim) else None, source)
            hits = []
            if d.accepted or no_reject:
                hits = [Hit(state.items[j]["id"], state.items[j]["path"], float(s))
                        for j, s in zip(lab.tolist(), sim.tolist())]
            out.append(QueryResult(d.accepted, d.reason, float(d.score), hits, d.source, domain))
        return out

    # -- extending ---------------------------------------------------------------------------
    def add(self, domain: str, images: Sequence[ImageSource], *, ids: Sequence[str] | None = None,
            metadata: Sequence[dict] | None = None, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
            progress: Callable[[int, int], None] | None = None) -> int:
        """Embed `images` and append them to an existing `domain`, persisted atomically.

        Ids default to the image's absolute path (random for in-memory images); images whose id is
        already in the domain are skipped, so re-adding a folder is harmless. A new domain name is
        refused (UnknownDomainError): new domains need prototypes, which only export computes.
        Returns the number of rows added. Bad image -> ImageError and nothing is written.
        """
        self._state(domain)
        images = list(images)
        if ids is not None and len(ids) != len(images):
            raise ValueError(f"{len(ids)} ids for {len(images)} images")
        if metadata is not None and len(metadata) != len(images):
            raise ValueError(f"{len(metadata)} metadata entries for {len(images)} images")
        items = []
        for i, img in enumerate(images):
            path = str(Path(os.fsdecode(img)).resolve()) if _is_path(img) else f"<{type(img).__name__}>"
            item = dict(metadata[i]) if metadata is not None else {}
            item["path"] = path
            item["id"] = str(ids[i]) if ids is not None else (
                path if _is_path(img) else f"{domain}/{uuid.uuid4().hex}")
            items.append(item)
        vecs = []
        step = self._encoder.batch_size
        for start in range(0, len(images), step):
            vecs.append(self.embed(images[start:start + step]))
            if progress is not None:
                progress(min(start + step, len(images)), len(images))
        if not images:
            return 0
        return self.add_vectors(domain, np.concatenate(vecs), items, lock_timeout=lock_timeout)

    def add_vectors(self, domain: str, vectors: np.ndarray, items: Sequence[dict], *,
                    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> int:
        """Append embeddings made by this engine's encoder (items: dicts with "path", optional
        "id" and metadata) to `domain`; persisted atomically. Returns the number of rows added."""
        self._state(domain)
        with self._add_lock:
            added, info = append_to_domain(self._info.root, domain, vectors, list(items),
                                           encoder_sha256=self._info.encoder.sha256,
                                           lock_timeout=lock_timeout)
            self._refresh(info)
        return added

    def _refresh(self, info: BundleInfo) -> None:
        """Swap in the on-disk state of every domain whose index changed (ours or another process's)."""
        states = dict(self._states)
        for name, d in info.domains.items():
            if name not in states or states[name].index_sha256 != d.index.sha256:
                states[name] = self._load_state(info, name)
        self._info = info
        self._states = states
