"""`Engine`: the torch-free retrieval API over one verified bundle.

Concurrency design: everything a query needs (encoder session, open-set rule, each domain's
hnswlib index + items) sits in one immutable snapshot; a query takes the current snapshot once and
uses only it, so it always sees one consistent state and needs no lock (an attribute read is
atomic). `add` and `reload` are serialised (a thread lock here, the bundle's file lock across
processes); `add` extends a *fresh* index loaded from the bundle — never one that queries are
reading — commits it to disk atomically, and only then publishes a new snapshot. So queries run in
parallel, adds never run concurrently with queries on the same hnswlib object, and what the engine
serves is always a state that is on disk.

Aligned retrieval (align.py): a query's raw embedding is aligned with its SOURCE domain's transform
(given, or inferred from the domains' Gaussians), mapped into the target's space where the bundle
learned a map, searched there, and the top candidates re-ranked by CSLS when the bundle stores its
statistics. `pair_scores` and `reject_fn` give `uemctl eval` exactly this scoring over whole sets.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .align import csls_scores, mean_top_k, pair_score_matrix
from .backend import Backends, DomainBackend
from .bundle.reader import BundleInfo, read_bundle
from .bundle.store import DEFAULT_LOCK_TIMEOUT_S, current_generation
from .bundle.writers import append_to_domain
from .encoder import Encoder
from .errors import BundleError, ImageError, UnknownDomainError
from .geometry import unit_rows
from .openset import Decision, OpenSetRule
from .preprocess import ImageSource, PreprocessSpec, preprocess, preprocess_batch

_OPEN_RETRIES = 3


@dataclass(frozen=True)
class Hit:
    id: str
    path: str
    score: float  # cosine similarity in the aligned space, higher is closer
    rank_score: float | None = None  # the CSLS score the hits are ordered by (None: by cosine)


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
    index: DomainBackend       # hnswlib DomainIndex or milvus.MilvusDomain (backend.py)
    items: list[dict]
    index_key: str             # equal across snapshots: the index object is reused

    @property
    def count(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class _Snapshot:
    """One consistent engine state; replaced as a whole, never mutated."""

    info: BundleInfo
    encoder: Encoder
    rule: OpenSetRule
    states: dict[str, _DomainState]
    backends: Backends


def _is_path(x: object) -> bool:
    return isinstance(x, (str, os.PathLike))


class Engine:
    """Query and extend one bundle. Create with `Engine.open(path)`."""

    def __init__(self, snap: _Snapshot, threads: int | None, fp32: bool) -> None:
        self._snap: _Snapshot | None = snap
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
    def _load(info: BundleInfo, threads: int | None, fp32: bool, old: _Snapshot | None,
              backends: Backends | None = None) -> _Snapshot:
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
                states[name] = _DomainState(name, prev.index, d.items, key)
            else:
                states[name] = _DomainState(name, backends.open(info, name), d.items, key)
        return _Snapshot(info, encoder, rule, states, backends)

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

    def _current(self) -> _Snapshot:
        snap = self._snap
        if snap is None:
            raise BundleError("the engine is closed")
        return snap

    # -- facts -------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._current().info.root

    @property
    def domains(self) -> list[str]:
        return list(self._current().states)

    @property
    def embed_dim(self) -> int:
        return self._current().info.embed_dim

    @property
    def preprocess_spec(self) -> PreprocessSpec:
        return self._current().info.preprocess

    @property
    def open_set_rule(self) -> OpenSetRule:
        """The rejection rule of the current state (evaluation passes it to uem.eval as reject_fn)."""
        return self._current().rule

    def reject_fn(self):
        """The open-set rule as `uem.eval`'s reject_fn, with own-domain neighbours from this
        engine's indexes, exactly as `query` decides (what `uemctl eval` scores)."""
        snap = self._current()

        def own_search(domain: str, vecs: np.ndarray, n: int) -> np.ndarray:
            if domain not in snap.states:
                return np.full((len(vecs), n), np.nan)
            return _own_search(snap, domain, np.asarray(vecs, np.float32), n)

        decide = snap.rule.reject_fn(own_search, pre_aligned=True)
        al = snap.info.alignment

        def reject(query_vectors, query_domain, target_domain, target_vectors):
            own_q = al.align(_query_rows(query_vectors, snap.info.embed_dim), query_domain)
            q = al.to_target(own_q, query_domain, target_domain)
            t = al.align(np.asarray(target_vectors, np.float32), target_domain)
            return decide(q, query_domain, target_domain, t, own_q)

        return reject

    def pair_scores(self, query_vectors: np.ndarray, query_domain: str, target_domain: str,
                    target_vectors: np.ndarray) -> np.ndarray:
        """The ranking scores of every query against every target item (N_q, N_t), exactly as
        `query` ranks its candidates: aligned cosine, or CSLS where the bundle uses it. CSLS
        statistics come from the two given sets themselves, as an index holding exactly these
        items stores them (what `uemctl eval` scores)."""
        snap = self._current()
        return pair_score_matrix(snap.info.alignment, _query_rows(query_vectors, snap.info.embed_dim), query_domain,
                                 target_domain, np.asarray(target_vectors, np.float32),
                                 csls=_csls_on(snap, query_domain, target_domain))

    @property
    def generation(self) -> int:
        """The bundle generation this engine serves (grows with every committed write)."""
        return self._current().info.generation

    def count(self, domain: str) -> int:
        return _state(self._current(), domain).count

    def info(self) -> dict:
        """Everything `uemctl info` shows: domains, counts, model facts, parity, calibration."""
        return self._current().info.summary()

    def check_domains(self, domain: str, source: str | None = None) -> None:
        """Raise UnknownDomainError now for a bad target or source (before any image is read)."""
        snap = self._current()
        _state(snap, domain)
        _check_source(snap, source)

    # -- embedding ---------------------------------------------------------------------------
    def preprocess(self, image: ImageSource) -> np.ndarray:
        """One image -> float32 (3, S, S) as the encoder expects. Raises ImageError."""
        return preprocess(image, self._current().info.preprocess)

    def embed_tensors(self, x: np.ndarray) -> np.ndarray:
        """Preprocessed float32 (N, 3, S, S) -> unit float32 (N, D)."""
        return self._current().encoder.embed(x)

    def embed(self, images: Iterable[ImageSource]) -> np.ndarray:
        """Images -> unit float32 (N, D). Raises ImageError on the first bad image."""
        snap = self._current()
        return snap.encoder.embed(preprocess_batch(images, snap.info.preprocess))

    # -- querying ----------------------------------------------------------------------------
    def query(self, image: ImageSource, domain: str, k: int = 10, source: str | None = None,
              no_reject: bool = False) -> QueryResult:
        """Find `image`'s matches in `domain`, or reject when its concept does not exist there."""
        return self.query_batch([image], domain, k, source=source, no_reject=no_reject)[0]

    def query_batch(self, images: Sequence[ImageSource], domain: str, k: int = 10,
                    source: str | None = None, no_reject: bool = False) -> list[QueryResult]:
        """`query` for many images (one encoder batch). Raises ImageError on the first bad image."""
        snap = self._current()
        _state(snap, domain)
        _check_source(snap, source)
        vecs = snap.encoder.embed(preprocess_batch(images, snap.info.preprocess))
        return _search(snap, vecs, domain, k, source, no_reject)

    def query_vector(self, vec: np.ndarray, domain: str, k: int = 10, source: str | None = None,
                     no_reject: bool = False) -> QueryResult:
        """`query` for an embedding already computed (any length; normalised here)."""
        return self.query_vectors(np.asarray(vec, np.float32).reshape(1, -1), domain, k,
                                  source=source, no_reject=no_reject)[0]

    def query_vectors(self, vecs: np.ndarray, domain: str, k: int = 10, source: str | None = None,
                      no_reject: bool = False) -> list[QueryResult]:
        """`query` for embeddings (N, D). k larger than the domain is clamped."""
        return _search(self._current(), vecs, domain, k, source, no_reject)

    def decide_vectors(self, vecs: np.ndarray, domain: str, source: str | None = None) -> list[Decision]:
        """Only the open-set decision for embeddings (N, D): does each one's concept exist in `domain`?"""
        snap = self._current()
        _state(snap, domain)
        _check_source(snap, source)
        vecs = _query_rows(vecs, snap.info.embed_dim)
        out: list[Decision | None] = [None] * len(vecs)
        for src, rows, own_q, q in _by_source(snap, vecs, source, domain):
            labels, sims = _state(snap, domain).index.search(q, max(1, snap.rule.contrast_k))
            for i, d in zip(rows, _decide(snap, own_q, domain, labels, sims, src)):
                out[i] = d
        return out  # type: ignore[return-value]

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
        _state(snap, domain)
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
        _state(self._current(), domain)
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


def _state(snap: _Snapshot, domain: str) -> _DomainState:
    try:
        return snap.states[domain]
    except KeyError:
        raise UnknownDomainError(domain, list(snap.states)) from None


def _check_source(snap: _Snapshot, source: str | None) -> None:
    known = snap.rule.graph.domains
    if source is not None and source not in snap.states and source not in known:
        raise UnknownDomainError(source, sorted(set(snap.states) | set(known)))


def _query_rows(vecs: np.ndarray, dim: int) -> np.ndarray:
    """Query vectors checked (finite, (N, dim)) and made unit rows (an all-zero row stays zero)."""
    vecs = np.asarray(vecs, dtype=np.float32)
    if vecs.ndim != 2 or vecs.shape[1] != dim or not np.all(np.isfinite(vecs)):
        raise ValueError(f"query vectors must be finite (N, {dim}), got {vecs.shape}")
    return unit_rows(vecs)


def _sources(snap: _Snapshot, vecs: np.ndarray, source: str | None) -> list[str | None]:
    """The given source for every query, or each one's inferred domain: from the alignment's
    per-domain Gaussians when the bundle has them, else from the nearest prototype."""
    if source is not None:
        return [source] * len(vecs)
    if snap.info.alignment.domains:
        return snap.info.alignment.infer_source(vecs)
    return [snap.rule.infer_source(q) for q in vecs]


def _by_source(snap: _Snapshot, vecs: np.ndarray, source: str | None, target: str):
    """Queries grouped by source: (source, rows, aligned in the source's space, in the target's)."""
    sources = _sources(snap, vecs, source)
    al = snap.info.alignment
    for src in dict.fromkeys(sources):
        rows = [i for i, s in enumerate(sources) if s == src]
        own_q = al.align(vecs[rows], src)
        yield src, rows, own_q, al.to_target(own_q, src, target)


def _csls_on(snap: _Snapshot, source: str | None, target: str) -> bool:
    order = snap.info.csls_order
    return (snap.info.alignment.csls.enabled and source is not None and source != target
            and source in order and target in order)


def _rank(snap: _Snapshot, source: str | None, target: str, labels: np.ndarray,
          sims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """HNSW candidates (best cosine first) -> (labels, cosines, CSLS or None), in ranking order."""
    if not _csls_on(snap, source, target):
        return labels, sims, None
    col = snap.info.csls_order.index(source)
    stats = snap.info.domains[target].csls
    valid = labels >= 0
    r_q = mean_top_k(np.where(valid, sims, np.nan), snap.info.alignment.csls.k)
    r_t = np.where(valid, stats[np.clip(labels, 0, None), col], 0.0)
    score = np.where(valid, csls_scores(sims, r_q, r_t), -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")
    pick = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
    return pick(labels), pick(sims), pick(score)


def _search(snap: _Snapshot, vecs: np.ndarray, domain: str, k: int, source: str | None,
            no_reject: bool) -> list[QueryResult]:
    """Top-k in `domain` + the open-set decision, all from one snapshot."""
    if int(k) < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    state = _state(snap, domain)
    _check_source(snap, source)
    vecs = _query_rows(vecs, snap.info.embed_dim)
    csls = snap.info.alignment.csls
    n = max(int(k), snap.rule.contrast_k, csls.candidates if csls.enabled else 1)
    out: list[QueryResult | None] = [None] * len(vecs)
    for src, rows, own_q, q in _by_source(snap, vecs, source, domain):
        labels, sims = state.index.search(q, n)
        decisions = _decide(snap, own_q, domain, labels, sims, src)
        ranked_labels, ranked_sims, ranked = _rank(snap, src, domain, labels, sims)
        for r, i in enumerate(rows):
            d, hits = decisions[r], []
            if d.accepted or no_reject:  # label -1: a backend answered with fewer than k hits
                lab, sim = ranked_labels[r, :k].tolist(), ranked_sims[r, :k].tolist()
                rs = [None] * len(lab) if ranked is None else ranked[r, :k].tolist()
                hits = [Hit(state.items[j]["id"], state.items[j]["path"], float(c),
                            None if z is None else float(z))
                        for j, c, z in zip(lab, sim, rs) if j >= 0]
            out[i] = QueryResult(d.accepted, d.reason, float(d.score), hits, d.source, domain)
    return out  # type: ignore[return-value]


def _decide(snap: _Snapshot, own_q: np.ndarray, target: str, labels: np.ndarray, sims: np.ndarray,
            source: str | None) -> list[Decision]:
    """The open-set decision for queries of one source, from their target hits (best cosine
    first) and, where the pair is decided by neighbourhood contrast, their own-domain neighbours.
    `own_q`: the queries aligned in their source's space (where its prototypes and index live)."""
    rule = snap.rule
    own = _own_neighbours(snap, own_q, source, target)
    out = []
    for i, (q, lab, sim) in enumerate(zip(own_q, labels, sims)):
        found = lab >= 0
        out.append(rule.decide(q, target, float(sim[0]) if len(sim) and lab[0] >= 0 else None, source,
                               target_sims=sim[found] if own is not None else None,
                               own_sims=None if own is None else own[i]))
    return out


def _own_search(snap: _Snapshot, domain: str, vecs: np.ndarray, n: int) -> np.ndarray:
    """Cosines of `vecs`' n nearest items in `domain`, best first; NaN where fewer were found."""
    lab, sims = _state(snap, domain).index.search(vecs, n)
    sims = np.where(lab >= 0, sims, np.nan).astype(np.float64)
    if sims.shape[1] < n:
        sims = np.pad(sims, ((0, 0), (0, n - sims.shape[1])), constant_values=np.nan)
    return sims


def _own_neighbours(snap: _Snapshot, own_q: np.ndarray, source: str | None,
                    target: str) -> np.ndarray | None:
    """The queries' own-domain neighbour cosines when their pair is decided by neighbourhood contrast."""
    n = snap.rule.own_k(source, target)
    if source is None or source not in snap.states or not n:
        return None
    return _own_search(snap, source, own_q, n)
