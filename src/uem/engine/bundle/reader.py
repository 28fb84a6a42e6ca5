"""The verifying reader: `read_bundle` checks a whole bundle before any file reaches hnswlib or
onnxruntime, and returns it as a `BundleInfo` (items, alignment and prototypes already loaded).

Checked, in order: the manifest parses, its format version is one this code reads (migrated to the
newest schema, manifest.py) and its own checksum matches; every path stays inside the bundle;
every file exists with the recorded size and sha256; each vectors.npy header says
float32 [count, dim]; each items.jsonl has `count` well-formed lines; each index.bin header agrees
with the manifest (dim, count, M; neighbour ids in range — see `index.check_index_file`); the
alignment, CSLS statistics, prototypes and backend record agree with the domains.
No pickle anywhere: `np.load(..., allow_pickle=False)`, JSON for everything else.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..align import IDENTITY, Alignment
from ..errors import BundleError, UnknownDomainError
from ..index import DomainIndex, check_index_file
from ..items import ItemList, ItemsFormatError
from ..preprocess import PreprocessSpec
from ..prototypes import PROTOTYPES_JSON, PROTOTYPES_NPY, PrototypeGraph
from .manifest import DOMAIN_NAME, FileRecord, HnswParams, Manifest, read_manifest, sha256_file

_READ_RETRIES = 3


@dataclass(frozen=True)
class FileEntry:
    """One verified file: where it lies and what it hashes to."""

    name: str        # logical name, e.g. "domains/sketch/index.bin"
    path: Path       # absolute physical path
    size: int
    sha256: str


@dataclass
class DomainInfo:
    """A verified domain: its count and files; items already parsed (the engine needs them)."""

    name: str
    count: int
    index: FileEntry | None        # None: the domain is indexed in the bundle's external backend
    vectors: FileEntry
    items_file: FileEntry
    items: list[dict] = field(repr=False, default_factory=list)
    csls_file: FileEntry | None = None
    csls: np.ndarray | None = field(repr=False, default=None)  # (count, len(alignment order))


@dataclass
class BundleInfo:
    """What `read_bundle` returns: a verified bundle, nothing yet loaded into hnswlib/onnxruntime."""

    root: Path
    manifest: dict                 # as on disk (its own format_version); manifest.migrate upgrades it
    generation: int
    preprocess: PreprocessSpec
    embed_dim: int
    hnsw: HnswParams
    encoder: FileEntry
    encoder_fp32: FileEntry | None
    domains: dict[str, DomainInfo]
    prototypes_npy: FileEntry
    prototypes_json: FileEntry
    calibration: dict
    extra: dict
    prototypes: PrototypeGraph = field(repr=False, default=None)  # type: ignore[assignment]
    backend: dict | None = None    # manifest["backend"]: external index (e.g. Milvus), or None
    alignment: Alignment = field(repr=False, default_factory=Alignment)
    alignment_file: FileEntry | None = None

    @functools.cached_property
    def csls_order(self) -> list[str]:
        """The source domain of each column of a domain's CSLS statistics (read per query: cached)."""
        return list((self.manifest.get("alignment") or {}).get("csls_columns") or [])

    def aligned_vectors(self, domain: str) -> np.ndarray:
        """The domain's stored raw vectors, aligned as its index holds them."""
        return self.alignment.align(self.load_vectors(domain, mmap=False), domain)

    def load_prototypes(self) -> PrototypeGraph:
        """The verified prototype graph (checked against embed_dim)."""
        return self.prototypes

    def load_vectors(self, domain: str, *, mmap: bool = True) -> np.ndarray:
        """float32 [count, dim]; memory-mapped read-only by default."""
        d = self.domain(domain)
        return np.load(d.vectors.path, mmap_mode="r" if mmap else None, allow_pickle=False)

    def summary(self) -> dict:
        """The facts `uemctl info` and `Engine.info()` show (JSON-ready)."""
        m, g = self.manifest, self.prototypes
        return {
            "path": str(self.root),
            "format_version": m["format_version"],
            "generation": self.generation,
            "written_at": m.get("written_at"),
            "domains": {n: d.count for n, d in self.domains.items()},
            "model": {
                "embed_dim": self.embed_dim,
                "preprocess": self.preprocess.to_dict(),
                "opset": m["model"].get("opset"),
                "encoder": {"size": self.encoder.size, "sha256": self.encoder.sha256},
                "encoder_fp32": None if self.encoder_fp32 is None else
                {"size": self.encoder_fp32.size, "sha256": self.encoder_fp32.sha256},
                "extra": self.extra,
            },
            "hnsw": dict(m["hnsw"]),
            **({"backend": {k: v for k, v in self.backend.items()}} if self.backend else {}),
            "prototypes": {"count": int(len(g.centroids)), "domains": list(g.domains),
                           "per_domain": {d: int(np.sum(g.owner == k)) for k, d in enumerate(g.domains)},
                           "links": int(len(g.links))},
            "calibration": self.calibration,
            "alignment": self.alignment.describe(),
        }

    def domain(self, name: str) -> DomainInfo:
        try:
            return self.domains[name]
        except KeyError:
            raise UnknownDomainError(name, sorted(self.domains)) from None

    def load_index(self, domain: str, *, extra_capacity: int = 0) -> DomainIndex:
        """The domain's hnswlib index (its file was checked by read_bundle)."""
        d = self.domain(domain)
        if d.index is None:
            raise BundleError(f"{self.root}: domain {domain} is served by {self.backend['kind']}, "
                              "it has no hnswlib index")
        return DomainIndex.load(d.index.path, space=self.hnsw.space, dim=self.embed_dim,
                                count=d.count, ef_search=self.hnsw.ef_search, M=self.hnsw.M,
                                extra_capacity=extra_capacity, checked=True)


# ---------------------------------------------------------------------------------------------
# verification


class _Vanished(BundleError):
    """A listed file is missing: maybe a concurrent writer's cleanup; worth one more look."""


def _safe_path(root: Path, rel: Any, what: str) -> Path:
    """Resolve a manifest path, refusing anything that could leave the bundle directory."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel or ":" in rel:
        raise BundleError(f"{root}: manifest path for {what} is invalid: {rel!r}")
    pp = PurePosixPath(rel)
    if pp.is_absolute() or any(part in ("..", ".", "") for part in rel.split("/")):
        raise BundleError(f"{root}: manifest path for {what} escapes the bundle: {rel!r}")
    full = root / Path(*pp.parts)
    try:
        resolved = full.resolve(strict=False)
        resolved.relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):
        raise BundleError(f"{root}: manifest path for {what} escapes the bundle: {rel!r}") from None
    return full


def _verify_files(root: Path, files: dict[str, FileRecord]) -> dict[str, FileEntry]:
    out: dict[str, FileEntry] = {}
    for name, ent in files.items():
        path = _safe_path(root, ent.path, name)
        size, digest = ent.size, ent.sha256
        if not isinstance(size, int) or not isinstance(digest, str):
            raise BundleError(f"{root}: corrupt manifest (size/sha256 of {name!r})")
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _Vanished(f"{root}: missing file {name} ({ent.path})") from None
        except OSError as e:
            raise BundleError(f"{root}: cannot read {name} ({e.strerror})") from None
        if not path.is_file():
            raise BundleError(f"{root}: {name} is not a regular file")
        if st.st_size != size:
            raise BundleError(f"{root}: {name} has {st.st_size} bytes, manifest says {size} "
                              "(truncated or replaced)")
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise _Vanished(f"{root}: missing file {name}") from None
        except OSError as e:
            raise BundleError(f"{root}: cannot read {name} ({e.strerror})") from None
        if actual != digest:
            raise BundleError(f"{root}: checksum mismatch for {name} (corrupt or tampered)")
        out[name] = FileEntry(name, path, size, digest)
    return out


def _entry(files: dict[str, FileEntry], name: Any, root: Path) -> FileEntry:
    if not isinstance(name, str) or name not in files:
        raise BundleError(f"{root}: manifest names a file it does not list: {name!r}")
    return files[name]


def _check_vectors(entry: FileEntry, count: int, dim: int) -> None:
    try:
        with open(entry.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            header_end = f.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise BundleError(f"{entry.path}: not a valid .npy file ({e})") from None
    if dtype != np.dtype("<f4") or fortran or shape != (count, dim):
        raise BundleError(f"{entry.name}: holds {dtype} {shape}, manifest says float32 "
                          f"({count}, {dim})")
    if header_end + count * dim * 4 != entry.size:
        raise BundleError(f"{entry.name}: size does not match its header")


def _parse_items(entry: FileEntry, count: int) -> ItemList:
    """Every line validated; rows kept compact and parsed on access (see items.py)."""
    try:
        items = ItemList.parse(entry.path.read_bytes())
    except (ItemsFormatError, OSError) as e:
        raise BundleError(f"{entry.name}: corrupt items file ({e})") from None
    if len(items) != count:
        raise BundleError(f"{entry.name}: {len(items)} items, manifest says {count}")
    return items


def _load_alignment(root: Path, record: Any, files: dict[str, FileEntry], dim: int,
                    domains: dict[str, DomainInfo]) -> tuple[Alignment, FileEntry | None]:
    """The bundle's alignment (identity for bundles written without one; `record`: the manifest's)
    and each domain's CSLS statistics, checked against it; ValueError/BundleError when inconsistent."""
    if not record:
        if any(d.csls_file is not None for d in domains.values()):
            raise ValueError("CSLS statistics without an alignment record")
        return IDENTITY, None
    if not isinstance(record, dict):
        raise ValueError("alignment must be an object")
    entry = _entry(files, record.get("file"), root)
    try:
        with np.load(entry.path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, numpy and OS errors alike: a bad file
        raise BundleError(f"{entry.name}: not a valid alignment file ({type(e).__name__}: {e})") from None
    alignment = Alignment.from_arrays(record, arrays, dim)
    named = set(alignment.means) | set(alignment.source_domains) | {d for pair in alignment.maps for d in pair} \
        | set(alignment.probes)
    unknown = named - set(domains)
    if unknown:
        raise ValueError(f"alignment names unknown domain(s) {sorted(unknown)}")
    for d, rows in alignment.probe_rows.items():
        if len(rows) and int(rows.max()) >= domains[d].count:
            raise ValueError(f"probes of {d} name rows past its {domains[d].count} items")
    order = [str(x) for x in record.get("csls_columns") or []]
    if alignment.csls.enabled:
        if sorted(order) != sorted(domains):
            raise ValueError("CSLS columns must name every domain once")
        for d in domains.values():
            if d.csls_file is None:
                raise ValueError(f"domain {d.name} has no CSLS statistics")
            _check_vectors(d.csls_file, d.count, len(order))
            d.csls = np.load(d.csls_file.path, allow_pickle=False)
            if not np.all(np.isfinite(d.csls)):
                raise ValueError(f"CSLS statistics of {d.name} are not finite")
    return alignment, entry


def _load_prototypes(root: Path, npy: FileEntry, js: FileEntry, dim: int) -> PrototypeGraph:
    if npy.path.parent != js.path.parent or npy.path.name != PROTOTYPES_NPY \
            or js.path.name != PROTOTYPES_JSON:
        raise BundleError(f"{root}: prototype files must lie side by side as "
                          f"{PROTOTYPES_NPY} and {PROTOTYPES_JSON}")
    graph = PrototypeGraph.load(npy.path.parent)
    if graph.centroids.shape[1:] != (dim,):
        raise BundleError(f"{root}: prototypes have dim {graph.centroids.shape[1:]}, model has {dim}")
    return graph


_BACKEND_KINDS = ("milvus",)
_COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


def _check_backend(record: Any, domains: list[str]) -> dict | None:
    """The manifest's optional "backend" record: which external index serves which domain."""
    if record is None:
        return None
    if not isinstance(record, dict) or record.get("kind") not in _BACKEND_KINDS:
        raise ValueError(f"unknown backend record {record!r:.80}")
    cols, index = record.get("collections"), record.get("index")
    if not isinstance(record.get("uri"), str) or not isinstance(index, dict) or not isinstance(cols, dict):
        raise ValueError("backend record needs uri, index and collections")
    if sorted(cols) != sorted(domains):
        raise ValueError(f"backend collections cover {sorted(cols)}, the bundle has {sorted(domains)}")
    names = list(cols.values())
    if len(set(names)) != len(names) or not all(isinstance(c, str) and _COLLECTION_NAME.match(c)
                                                for c in names):
        raise ValueError(f"bad backend collection names {names}")
    return record




def _read_once(root: Path) -> BundleInfo:
    manifest = read_manifest(root)
    try:
        m = Manifest.upgrade(manifest)
        dim, hnsw = m.model.embed_dim, m.hnsw
        files = _verify_files(root, m.files)
        backend = _check_backend(m.backend, [d.name for d in m.domains])
        encoder = _entry(files, m.model.encoder, root)
        fp32 = _entry(files, m.model.encoder_fp32, root) if m.model.encoder_fp32 else None
        domains: dict[str, DomainInfo] = {}
        for d in m.domains:
            name, count, f = d.name, d.count, d.files
            if not DOMAIN_NAME.match(name) or name in domains or count < 1:
                raise ValueError(f"bad domain entry {name!r} (count {count})")
            external = backend is not None and name in backend["collections"]
            if external and "index" in f:
                raise ValueError(f"domain {name} has both an index file and a {backend['kind']} collection")
            info = DomainInfo(name, count, None if external else _entry(files, f["index"], root),
                              _entry(files, f["vectors"], root), _entry(files, f["items"], root))
            _check_vectors(info.vectors, count, dim)
            info.items = _parse_items(info.items_file, count)
            if "csls" in f:
                info.csls_file = _entry(files, f["csls"], root)
            if info.index is not None:
                check_index_file(info.index.path, dim=dim, count=count, M=hnsw.M)
            domains[name] = info
        npy = _entry(files, m.prototypes.centroids, root)
        js = _entry(files, m.prototypes.graph, root)
        graph = _load_prototypes(root, npy, js, dim)
        alignment, align_file = _load_alignment(root, m.alignment, files, dim, domains)
        return BundleInfo(root=root, manifest=manifest, generation=m.generation,
                          preprocess=m.model.preprocess, embed_dim=dim, hnsw=hnsw, encoder=encoder,
                          encoder_fp32=fp32, domains=domains, prototypes_npy=npy,
                          prototypes_json=js, calibration=m.calibration, extra=m.model.extra,
                          prototypes=graph, backend=backend, alignment=alignment,
                          alignment_file=align_file)
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise BundleError(f"{root}: corrupt manifest ({type(e).__name__}: {e})") from None


def read_bundle(path: str | Path) -> BundleInfo:
    """Open and fully verify the bundle at `path`. Raises BundleError / BundleVersionError.

    Retries a few times when a file vanished because a concurrent writer committed meanwhile.
    """
    root = Path(path)
    for attempt in range(_READ_RETRIES):
        try:
            return _read_once(root)
        except _Vanished as e:
            if attempt == _READ_RETRIES - 1:
                raise BundleError(str(e)) from None
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
