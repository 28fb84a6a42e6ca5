"""The bundle format (versions 1 and 2): the one writer and the one verifying reader.

Version 2 adds the alignment (alignment.npz, each domain's csls.npy, the manifest's "alignment"
record) and indexes that hold aligned vectors; a bundle without an alignment is still written as
version 1, so an older uem keeps reading it. A version-1 manifest with an alignment is refused: an
older writer would have appended raw vectors to an aligned index.

Logical layout — what the manifest describes, the names the rest of the code uses:

    manifest.json                    the commit record (see below)
    encoder.onnx                     int8 encoder; optional encoder.fp32.onnx
    domains/<name>/index.bin         hnswlib index over the domain's ALIGNED vectors (label = row)
    domains/<name>/vectors.npy       float32 [count, dim], unit length: the raw encoder output
    domains/<name>/csls.npy          optional float32 [count, domains]: CSLS statistics (align.py)
    alignment.npz                    optional per-domain means / whiteners / pair maps (align.py)
    domains/<name>/items.jsonl       one JSON object per row: {"id": str, "path": str, ...metadata}
    prototypes.npy + prototypes.json the PrototypeGraph (open-set rejection)

Physical layout and atomicity. A directory that exists cannot be replaced atomically by rename, so
the bundle directory is a small append-only store whose single mutable file is `manifest.json`:

    model.uem/manifest.json          maps every logical name to a physical path + size + sha256
    model.uem/g000007/...            an immutable generation: the files written by one commit
    model.uem/.lock                  advisory lock (fcntl.flock) serialising writers

A write creates the next generation directory, writes its files, fsyncs them and the directories,
then writes `manifest.json.tmp-*`, fsyncs it and `os.replace`s it onto `manifest.json` (atomic on
POSIX), then fsyncs the bundle directory. That replace is the commit: a crash before it leaves the
old manifest (pointing only at old, untouched files) — the old bundle; after it, the new one. An
incremental add writes only the changed domain's three files into the new generation; the new
manifest keeps pointing at the unchanged files of older generations (nothing copied). Garbage —
generation directories referenced neither by the new nor by the previous manifest, and `.tmp-*`
leftovers of a crashed writer — is deleted by the next successful write (under the lock). Keeping
the previous manifest's files means a reader that read the old manifest a moment ago still finds
its files; a reader that loses a longer race sees a missing file and retries (see `read_bundle`).
A flat bundle (physical path == logical name) is read the same way.

Verification happens in `read_bundle`, before any file reaches hnswlib or onnxruntime: the manifest
parses and its own checksum matches, the format version is supported, every path stays inside the
bundle, every file exists with the recorded size and sha256, each vectors.npy header says
float32 [count, dim], each items.jsonl has `count` well-formed lines, each index.bin header agrees
with the manifest (dim, count, M; neighbour ids in range — see `index.check_index_file`).
No pickle anywhere: `np.load(..., allow_pickle=False)`, JSON for everything else.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, Sequence

import numpy as np

from .atomic import exclusive_lock, fsync_dir, fsync_file, replace_atomic
from .align import ALIGNMENT_NPZ, IDENTITY, Alignment, csls_item_stats, exact_mean_top_k
from .errors import BundleError, BundleVersionError, UemError, UnknownDomainError
from .index import SPACES, DomainIndex, check_index_file
from .items import ItemList, ItemsFormatError
from .preprocess import PreprocessSpec
from .prototypes import PROTOTYPES_JSON, PROTOTYPES_NPY, PrototypeGraph

FORMAT_VERSION = 2                 # the newest version this uem writes
SUPPORTED_VERSIONS = (1, 2)
FORMAT_NAME = "uem-bundle"
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
ENCODER = "encoder.onnx"
ENCODER_FP32 = "encoder.fp32.onnx"
DEFAULT_LOCK_TIMEOUT_S = 60.0
MAX_MANIFEST_BYTES = 64 << 20
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_GENERATION = re.compile(r"^g(\d{6,})$")
_READ_RETRIES = 3


@dataclass(frozen=True)
class HnswParams:
    """hnswlib settings; hnswlib's file stores none of space/dim/ef, so the manifest does.

    space is 'ip' (inner product over unit vectors: score = cosine similarity, no per-query
    normalisation copy); 'cosine' is accepted and behaves the same on unit vectors.
    """

    M: int = 16
    ef_construction: int = 200
    ef_search: int = 64
    space: str = "ip"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"hnsw space must be one of {SPACES}, got {self.space!r}")
        if not (2 <= self.M <= 1024 and self.ef_construction >= 1 and self.ef_search >= 1):
            raise ValueError(f"bad hnsw parameters {self}")

    def to_dict(self) -> dict:
        return {"space": self.space, "M": self.M, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "HnswParams":
        return cls(M=int(d["M"]), ef_construction=int(d["ef_construction"]),
                   ef_search=int(d["ef_search"]), space=str(d["space"]), seed=int(d.get("seed", 0)))


@dataclass
class DomainData:
    """One domain as handed to the writer.

    vectors: float32 [N, dim], unit length (re-normalised defensively); items: N dicts, each with
    "path" (str) and "id" (str, unique in the domain; defaults to the path) plus any JSON metadata.
    Row i of `vectors` is item i and hnswlib label i. The writer builds index.bin from the vectors.
    """

    name: str
    vectors: np.ndarray
    items: list[dict]


class ExternalIndex(Protocol):
    """An index kept outside the bundle (a vector database, see milvus.MilvusIndex).

    The bundle still stores every domain's vectors + items (the source of truth); the manifest's
    "backend" record (what `create` returns) names where the index lives, and such domains have
    no index.bin. `create` runs before the commit (a failure drops what it made: `discard`);
    `append` runs under the writer lock before an add commits; `retire` drops what a committed
    re-export replaced.
    """

    kind: str

    def create(self, root: Path, domains: Sequence[tuple[str, np.ndarray, list[dict]]],
               hnsw: "HnswParams", dim: int) -> dict: ...

    def append(self, record: dict, domain: str, vectors: np.ndarray, first_row: int,
               items: list[dict]) -> None: ...

    def discard(self, record: dict) -> None: ...

    def retire(self, old: dict | None, new: dict | None) -> None: ...


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
    manifest: dict
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

    @property
    def csls_order(self) -> list[str]:
        """The source domain of each column of a domain's CSLS statistics."""
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
# reading


class _Vanished(BundleError):
    """A listed file is missing: maybe a concurrent writer's cleanup; worth one more look."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=_json_default).encode("ascii")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, PurePosixPath)):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(_canonical(body)).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(root: Path) -> dict:
    """Parse manifest.json and check its version and own checksum."""
    if not root.exists():
        raise BundleError(f"{root}: no such bundle")
    if not root.is_dir():
        raise BundleError(f"{root}: not a bundle (a bundle is a directory)")
    mpath = root / MANIFEST
    try:
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise BundleError(f"{mpath}: manifest is implausibly large")
        raw = mpath.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{root}: not a bundle (no {MANIFEST})") from None
    except OSError as e:
        raise BundleError(f"{mpath}: cannot read ({e.strerror})") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BundleError(f"{mpath}: corrupt manifest (not JSON: {e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{mpath}: corrupt manifest (not a JSON object)")
    version = manifest.get("format_version")
    if manifest.get("format") != FORMAT_NAME or not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{mpath}: not a uem bundle manifest")
    if version not in SUPPORTED_VERSIONS:
        raise BundleVersionError(f"{root}: bundle format version {version} is not supported "
                                 f"(this uem reads versions {', '.join(map(str, SUPPORTED_VERSIONS))})")
    if version < 2 and manifest.get("alignment"):
        raise BundleError(f"{mpath}: corrupt manifest (an alignment in a version-{version} bundle)")
    try:
        ok = manifest.get("checksum") == _checksum(manifest)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BundleError(f"{mpath}: manifest checksum mismatch (corrupt or edited)")
    return manifest


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


def _verify_files(root: Path, manifest: dict) -> dict[str, FileEntry]:
    files = manifest["files"]
    if not isinstance(files, dict):
        raise BundleError(f"{root}: corrupt manifest (files is not an object)")
    out: dict[str, FileEntry] = {}
    for name, ent in files.items():
        if not isinstance(ent, dict):
            raise BundleError(f"{root}: corrupt manifest (entry for {name!r})")
        path = _safe_path(root, ent.get("path"), name)
        size, digest = ent.get("size"), ent.get("sha256")
        if not isinstance(size, int) or not isinstance(digest, str):
            raise BundleError(f"{root}: corrupt manifest (size/sha256 of {name!r})")
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _Vanished(f"{root}: missing file {name} ({ent['path']})") from None
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


def _load_alignment(root: Path, manifest: dict, files: dict[str, FileEntry], dim: int,
                    domains: dict[str, DomainInfo]) -> tuple[Alignment, FileEntry | None]:
    """The bundle's alignment (identity for bundles written without one) and each domain's CSLS
    statistics, checked against the manifest; ValueError/BundleError when inconsistent."""
    record = manifest.get("alignment")
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
    named = set(alignment.means) | set(alignment.source_domains) | {d for pair in alignment.maps for d in pair}
    unknown = named - set(domains)
    if unknown:
        raise ValueError(f"alignment names unknown domain(s) {sorted(unknown)}")
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
    manifest = _read_manifest(root)
    try:
        model, hnsw_d = manifest["model"], manifest["hnsw"]
        spec = PreprocessSpec.from_dict(model["preprocess"])
        dim = int(model["embed_dim"])
        hnsw = HnswParams.from_dict(hnsw_d)
        if int(hnsw_d["dim"]) != dim or dim <= 0:
            raise ValueError(f"hnsw dim {hnsw_d['dim']} != embed_dim {dim}")
        files = _verify_files(root, manifest)
        backend = _check_backend(manifest.get("backend"), [str(d["name"]) for d in manifest["domains"]])
        encoder = _entry(files, model["encoder"], root)
        fp32 = _entry(files, model["encoder_fp32"], root) if model.get("encoder_fp32") else None
        domains: dict[str, DomainInfo] = {}
        for d in manifest["domains"]:
            name, count, f = str(d["name"]), int(d["count"]), d["files"]
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
        protos = manifest["prototypes"]
        npy = _entry(files, protos["centroids"], root)
        js = _entry(files, protos["graph"], root)
        graph = _load_prototypes(root, npy, js, dim)
        calibration, extra = manifest.get("calibration") or {}, model.get("extra") or {}
        if not isinstance(calibration, dict) or not isinstance(extra, dict):
            raise ValueError("calibration/extra must be objects")
        alignment, align_file = _load_alignment(root, manifest, files, dim, domains)
        return BundleInfo(root=root, manifest=manifest, generation=int(manifest["generation"]),
                          preprocess=spec, embed_dim=dim, hnsw=hnsw, encoder=encoder,
                          encoder_fp32=fp32, domains=domains, prototypes_npy=npy,
                          prototypes_json=js, calibration=calibration, extra=extra,
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


# ---------------------------------------------------------------------------------------------
# writing


def _generation_dirs(root: Path) -> dict[str, int]:
    out = {}
    for p in root.iterdir():
        m = _GENERATION.match(p.name)
        if m and p.is_dir():
            out[p.name] = int(m.group(1))
    return out


def _owned_name(name: str) -> bool:
    return (name in (MANIFEST, LOCK_FILE) or bool(_GENERATION.match(name))
            or name.startswith(".tmp-") or name.startswith(MANIFEST + ".tmp-"))


def _prepare_root(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise BundleError(f"{root}: exists and is not a directory; refusing to overwrite it")
    if root.is_dir() and not (root / MANIFEST).exists():
        foreign = [p.name for p in root.iterdir() if not _owned_name(p.name)]
        if foreign:
            raise BundleError(f"{root}: directory is not empty and not a bundle; refusing to "
                              f"write into it (found {foreign[0]!r})")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BundleError(f"{root}: cannot create bundle directory ({e.strerror})") from None


def _current_manifest_or_none(root: Path) -> dict | None:
    """The committed manifest if it is readable; a corrupt one is simply replaced."""
    try:
        return _read_manifest(root)
    except BundleError:
        return None


def _referenced_generations(manifest: dict | None) -> set[str]:
    if not manifest:
        return set()
    try:
        return {str(e["path"]).split("/", 1)[0] for e in manifest["files"].values()}
    except (KeyError, TypeError, AttributeError):
        return set()


def _new_generation_dir(root: Path, old: dict | None) -> tuple[int, Path]:
    gens = _generation_dirs(root)
    last = max([*gens.values(), int((old or {}).get("generation", 0) or 0)], default=0)
    gen = last + 1
    gdir = root / f"g{gen:06d}"
    gdir.mkdir()
    return gen, gdir


def _cleanup(root: Path, keep: set[str]) -> None:
    """Delete unreferenced generations and crashed writers' temporaries (caller holds the lock)."""
    for p in root.iterdir():
        if _GENERATION.match(p.name) and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(".tmp-") or p.name.startswith(MANIFEST + ".tmp-"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    p.unlink()
                except OSError:
                    pass


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "xb") as f:
        np.save(f, arr, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def _save_items(path: Path, items: list[dict]) -> None:
    with open(path, "xb") as f:
        for it in items:
            f.write(_canonical(it) + b"\n")
        f.flush()
        os.fsync(f.fileno())


def _copy_file(src: Path, dst: Path) -> None:
    try:
        with open(src, "rb") as fi, open(dst, "xb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
    except FileNotFoundError:
        raise ValueError(f"{src}: no such file") from None


def _check_domain(d: DomainData, dim: int) -> tuple[np.ndarray, list[dict]]:
    """Validate a domain handed to the writer; returns (unit float32 vectors, normalised items)."""
    if not isinstance(d.name, str) or not DOMAIN_NAME.match(d.name):
        raise ValueError(f"domain name {d.name!r} is not usable as a folder name "
                         "(letters, digits, '.', '_', '-'; at most 64)")
    vecs = _unit_rows(d.vectors, dim, d.name)
    if len(vecs) == 0:
        raise ValueError(f"domain {d.name!r} has no items")
    if len(d.items) != len(vecs):
        raise ValueError(f"domain {d.name!r}: {len(d.items)} items for {len(vecs)} vectors")
    items = _normalise_items(d.items, d.name)
    return vecs, items


def _unit_rows(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"{what}: vectors have shape {v.shape}, expected (N, {dim})")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what}: vectors contain NaN or infinity")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norms < 1e-12):
        raise ValueError(f"{what}: a vector has zero length")
    if np.all(np.abs(norms - 1) < 1e-6):  # already unit: keep the bits (a realign rewrites them as they are)
        return np.ascontiguousarray(v)
    return np.ascontiguousarray(v / norms, dtype=np.float32)


def _normalise_items(items: list[dict], what: str, seen: set[str] | None = None) -> list[dict]:
    out, seen = [], set() if seen is None else seen
    for i, it in enumerate(items):
        if not isinstance(it, dict) or not isinstance(it.get("path"), str):
            raise ValueError(f"{what}: item {i} must be a dict with a string 'path'")
        it = dict(it)
        it.setdefault("id", it["path"])
        if not isinstance(it["id"], str):
            raise ValueError(f"{what}: item {i} has a non-string id")
        if it["id"] in seen:
            raise ValueError(f"{what}: duplicate item id {it['id']!r}")
        seen.add(it["id"])
        try:
            _canonical(it)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: item {i} is not JSON-serialisable ({e})") from None
        out.append(it)
    return out


def _write_domain_files(gdir: Path, name: str, vecs: np.ndarray | None, items: list[dict] | None,
                        index: DomainIndex | None, csls: np.ndarray | None = None) -> dict[str, Path]:
    """index None: the domain is indexed externally; only vectors + items are written. vecs and
    items None: only the CSLS statistics changed (an add to another domain)."""
    ddir = gdir / "domains" / name
    ddir.mkdir(parents=True, exist_ok=True)
    paths = {}
    if index is not None:
        paths["index"] = ddir / "index.bin"
        index.save(paths["index"])
        fsync_file(paths["index"])
    if vecs is not None:
        paths["vectors"] = ddir / "vectors.npy"
        _save_npy(paths["vectors"], vecs)
    if items is not None:
        paths["items"] = ddir / "items.jsonl"
        _save_items(paths["items"], items)
    if csls is not None:
        paths["csls"] = ddir / "csls.npy"
        _save_npy(paths["csls"], np.ascontiguousarray(csls, dtype=np.float32))
    return paths


def _save_alignment(gdir: Path, alignment: Alignment) -> Path:
    path = gdir / ALIGNMENT_NPZ
    with open(path, "xb") as f:
        np.savez(f, **alignment.arrays())
        f.flush()
        os.fsync(f.fileno())
    return path


def _alignment_record(alignment: Alignment, order: list[str]) -> dict:
    return {**alignment.describe(), "file": ALIGNMENT_NPZ, "csls_columns": list(order)}


def _file_record(root: Path, path: Path) -> dict:
    return {"path": path.relative_to(root).as_posix(), "size": path.stat().st_size,
            "sha256": sha256_file(path)}


def _fsync_tree(top: Path) -> None:
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        fsync_dir(Path(dirpath))


def _commit(root: Path, manifest: dict, gdir: Path, old: dict | None) -> None:
    """fsync the generation, swap the manifest in (the commit point), then collect garbage."""
    _fsync_tree(gdir)
    fsync_dir(root)
    manifest["checksum"] = _checksum(manifest)
    replace_atomic(root / MANIFEST, json.dumps(manifest, indent=1, sort_keys=False,
                                               ensure_ascii=True, allow_nan=False).encode("ascii"))
    _cleanup(root, _referenced_generations(manifest) | _referenced_generations(old))


def _onnx_opset(path: Path) -> int | None:
    """The default-domain opset of an ONNX file when the onnx package is present (no torch)."""
    try:
        import onnx

        m = onnx.load(str(path), load_external_data=False)
        return next((int(o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception:  # optional fact; any failure just leaves it unknown
        return None


def _index_threads(n: int) -> int:
    return 1 if n < 20000 else max(1, os.cpu_count() or 1)


def write_bundle(path: str | Path, *, encoder_onnx: Path, encoder_fp32_onnx: Path | None,
                 preprocess: PreprocessSpec, embed_dim: int, domains: list[DomainData],
                 prototypes: PrototypeGraph, hnsw: HnswParams, calibration: dict,
                 extra: dict, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
                 external: ExternalIndex | None = None, alignment: Alignment = IDENTITY,
                 expect_generation: int | None = None) -> None:
    """Write a complete bundle at `path` atomically (new, or replacing an existing bundle).

    `external`: index the domains there (e.g. Milvus) instead of in hnswlib files; its record goes
    into manifest["backend"] and the collections a replaced bundle used there are dropped.

    The ONNX files are copied in (the sources are left alone). Builds one hnswlib index per domain.
    `calibration`: {"radius_scale": {target_domain: factor}} (may be {}) plus any other JSON the
    exporter wants kept; `extra`: JSON stored under manifest["model"]["extra"] (e.g. the parity
    report). `alignment`: the per-domain transforms (align.py); the indexes are built over the
    aligned vectors, vectors.npy keeps the raw ones, and with CSLS each domain's statistics are
    computed here. `expect_generation`: refuse (BundleError) unless the bundle on disk is still
    that generation once the lock is held (a rewrite of a bundle read earlier must not drop an add
    committed meanwhile). Refuses to write into an existing directory that is neither empty nor a bundle.
    Raises BundleError (lock timeout, bad target) or ValueError (inconsistent inputs: a caller bug).
    """
    root = Path(path)
    dim = int(embed_dim)
    if dim <= 0:
        raise ValueError(f"embed_dim must be positive, got {embed_dim}")
    if not domains:
        raise ValueError("a bundle needs at least one domain")
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate domain names in {names}")
    checked = [_check_domain(d, dim) for d in domains]
    if prototypes.dim != dim:
        raise ValueError(f"prototypes have dim {prototypes.dim}, embed_dim is {dim}")
    _canonical({"calibration": calibration, "extra": extra})  # fail early if not JSON
    order = [d.name for d in domains]
    aligned = {d.name: alignment.align(v, d.name) for d, (v, _) in zip(domains, checked)}
    csls = csls_item_stats(aligned, alignment, order) if alignment.csls.enabled else {}
    for src in (encoder_onnx, encoder_fp32_onnx):
        if src is not None and not Path(src).is_file():
            raise ValueError(f"{src}: no such ONNX file")

    _prepare_root(root)
    with exclusive_lock(root / LOCK_FILE, lock_timeout):
        old = _current_manifest_or_none(root)
        if expect_generation is not None and (old or {}).get("generation") != expect_generation:
            raise BundleError(f"{root}: the bundle changed on disk meanwhile (another write committed); "
                              "nothing was written, run it again")
        gen, gdir = _new_generation_dir(root, old)
        record = None
        try:
            written: dict[str, Path] = {}
            written[ENCODER] = gdir / ENCODER
            _copy_file(Path(encoder_onnx), written[ENCODER])
            if encoder_fp32_onnx is not None:
                written[ENCODER_FP32] = gdir / ENCODER_FP32
                _copy_file(Path(encoder_fp32_onnx), written[ENCODER_FP32])
            dom_entries = []
            if alignment.active:
                written[ALIGNMENT_NPZ] = _save_alignment(gdir, alignment)
            for d, (vecs, items) in zip(domains, checked):
                index = None if external is not None else DomainIndex.build(
                    aligned[d.name], space=hnsw.space, M=hnsw.M, ef_construction=hnsw.ef_construction,
                    ef_search=hnsw.ef_search, seed=hnsw.seed, threads=_index_threads(len(vecs)))
                paths = _write_domain_files(gdir, d.name, vecs, items, index, csls.get(d.name))
                logical = {k: f"domains/{d.name}/{p.name}" for k, p in paths.items()}
                written.update({logical[k]: p for k, p in paths.items()})
                dom_entries.append({"name": d.name, "count": len(vecs), "files": logical})
            prototypes.save(gdir)
            for n in (PROTOTYPES_NPY, PROTOTYPES_JSON):
                written[n] = gdir / n
                fsync_file(written[n])
            if external is not None:
                record = external.create(root, [(d.name, aligned[d.name], it) for d, (_, it) in zip(domains, checked)],
                                         hnsw, dim)
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION if alignment.active else 1,
                "generation": gen,
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "model": {
                    "encoder": ENCODER,
                    "encoder_fp32": ENCODER_FP32 if encoder_fp32_onnx is not None else None,
                    "preprocess": preprocess.to_dict(),
                    "embed_dim": dim,
                    "opset": _onnx_opset(Path(encoder_onnx)),
                    "extra": json.loads(_canonical(extra)),
                },
                "hnsw": {**hnsw.to_dict(), "dim": dim},
                "domains": dom_entries,
                "prototypes": {"centroids": PROTOTYPES_NPY, "graph": PROTOTYPES_JSON,
                               "count": int(len(prototypes.centroids)),
                               "domains": list(prototypes.domains)},
                "calibration": json.loads(_canonical(calibration)),
                "files": {n: _file_record(root, p) for n, p in written.items()},
            }
            if alignment.active:
                manifest["alignment"] = json.loads(_canonical(_alignment_record(alignment, order)))
            if record is not None:
                manifest["backend"] = json.loads(_canonical(record))
            _commit(root, manifest, gdir, old)
        except BaseException:
            # Not committed: the old manifest still rules; drop our half-written generation now.
            if not (root / MANIFEST).exists() or _current_generation(root) != gen:
                shutil.rmtree(gdir, ignore_errors=True)
                if record is not None:
                    external.discard(record)
            raise
        _retire_external((old or {}).get("backend"), external, record)


def _current_generation(root: Path) -> int | None:
    m = _current_manifest_or_none(root)
    return None if m is None else m.get("generation")


def append_to_domain(path: str | Path, domain: str, vectors: np.ndarray, items: list[dict], *,
                     encoder_sha256: str | None = None,
                     lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
                     external: ExternalIndex | None = None) -> tuple[int, BundleInfo]:
    """Incremental add: append rows to one existing domain, committed atomically.

    Under the writer lock it re-reads the bundle from disk (so two processes adding never lose each
    other's rows), skips items whose id is already in the domain, extends that domain's index,
    vectors and items, and commits a generation holding only those three files. When
    `encoder_sha256` is given and the bundle's encoder differs (re-exported meanwhile), the vectors
    were made by another model: BundleError. Returns (rows added, the new verified BundleInfo).
    A domain indexed externally (Milvus) gets its rows there first (`external`, default: a
    connection to the manifest's uri), then only vectors + items are committed; rows written there
    by an add that then failed stay invisible (searches see rows < count) and are overwritten.
    """
    root = Path(path)
    if not (root / MANIFEST).is_file():
        read_bundle(root)  # raises the precise "no such bundle / not a bundle" error
    with exclusive_lock(root / LOCK_FILE, lock_timeout):
        info = read_bundle(root)
        if encoder_sha256 is not None and info.encoder.sha256 != encoder_sha256:
            raise BundleError(f"{root}: the bundle's encoder changed on disk since it was opened "
                              "(re-exported?); reopen it and add again")
        dom = info.domain(domain)
        vecs = _unit_rows(vectors, info.embed_dim, domain)
        if len(items) != len(vecs):
            raise ValueError(f"{len(items)} items for {len(vecs)} vectors")
        existing = {it["id"] for it in dom.items}
        keep, new_items, seen = [], [], set(existing)
        for i, it in enumerate(items):
            it = _normalise_items([it], domain)[0]
            if it["id"] in seen:
                continue
            seen.add(it["id"])
            keep.append(i)
            new_items.append(it)
        if not keep:
            return 0, info
        vecs = vecs[keep]
        old_vecs = np.load(dom.vectors.path, allow_pickle=False)
        all_vecs = np.concatenate([old_vecs, vecs]).astype(np.float32, copy=False)
        # the stored transform aligns the new rows; it is not refitted (see `uemctl index realign`)
        new_aligned = info.alignment.align(vecs, domain)
        if dom.index is None:
            index = None
            _append_external(info, external, domain, new_aligned, dom.count, new_items)
        else:
            index = info.load_index(domain, extra_capacity=len(vecs))
            index.add(new_aligned, first_label=dom.count, threads=_index_threads(len(vecs)))
        csls = _csls_after_add(info, domain, all_vecs) if info.alignment.csls.enabled else {}
        old = info.manifest
        gen, gdir = _new_generation_dir(root, old)
        try:
            manifest = copy.deepcopy(old)
            manifest.pop("checksum", None)
            manifest["generation"] = gen
            manifest["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            for d in manifest["domains"]:
                if d["name"] == domain:
                    paths = _write_domain_files(gdir, domain, all_vecs, dom.items + new_items, index,
                                                csls.get(domain))
                    d["count"] = len(all_vecs)
                elif d["name"] in csls:
                    paths = _write_domain_files(gdir, d["name"], None, None, None, csls[d["name"]])
                else:
                    continue
                for key, p in paths.items():
                    manifest["files"][d["files"][key]] = _file_record(root, p)
            _commit(root, manifest, gdir, old)
        except BaseException:
            if _current_generation(root) != gen:
                shutil.rmtree(gdir, ignore_errors=True)
            raise
        return len(vecs), read_bundle(root)


def _csls_after_add(info: BundleInfo, domain: str, all_vecs: np.ndarray) -> dict[str, np.ndarray]:
    """CSLS statistics after rows were added to `domain`: its old rows keep theirs (no other domain
    changed), its new rows get theirs against every other domain, and every other domain's
    statistics against `domain` are recomputed (the new rows may be among their k nearest).
    Exact, over the stored vectors: O(items of the other domains x items of `domain`) per add."""
    order, al = info.csls_order, info.alignment
    k, n_old = al.csls.k, info.domains[domain].count
    grown = al.align(all_vecs, domain)
    others = {d: info.aligned_vectors(d) for d in order if d != domain}
    mine = np.zeros((len(all_vecs), len(order)), np.float32)
    mine[:n_old] = info.domains[domain].csls
    for j, s in enumerate(order):
        if s != domain:
            mine[n_old:, j] = exact_mean_top_k(al.to_target(grown[n_old:], domain, s), others[s], k)
    out = {domain: mine}
    col = order.index(domain)
    for t, aligned in others.items():
        stats = np.array(info.domains[t].csls, np.float32)
        stats[:, col] = exact_mean_top_k(al.to_target(aligned, t, domain), grown, k)
        out[t] = stats
    return out


def _append_external(info: BundleInfo, external: ExternalIndex | None, domain: str,
                     vecs: np.ndarray, first_row: int, items: list[dict]) -> None:
    if external is not None:
        external.append(info.backend, domain, vecs, first_row, items)
        return
    from .backend import Backends  # the manifest's own backend; imported late (it imports us)

    backends = Backends()
    try:
        backends.external(info).append(info.backend, domain, vecs, first_row, items)
    finally:
        backends.close()


def reindex_bundle(path: str | Path, external: ExternalIndex | None, *,
                   lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> BundleInfo:
    """Move every domain's index to `external` (e.g. Milvus), or back into hnswlib files (None).

    Possible because the bundle keeps each domain's vectors + items: nothing is re-embedded and
    the encoder, prototypes and calibration are untouched. Commits like any write (a new
    generation, then the manifest); the collections the bundle used before are dropped afterwards.
    """
    root = Path(path)
    if not (root / MANIFEST).is_file():
        read_bundle(root)
    with exclusive_lock(root / LOCK_FILE, lock_timeout):
        info = read_bundle(root)
        old = info.manifest
        gen, gdir = _new_generation_dir(root, old)
        record = None
        try:
            manifest = copy.deepcopy(old)
            manifest.pop("checksum", None)
            manifest.pop("backend", None)
            manifest["generation"] = gen
            manifest["written_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if external is not None:
                record = external.create(root, [(n, info.aligned_vectors(n), d.items)
                                                for n, d in info.domains.items()],
                                         info.hnsw, info.embed_dim)
                manifest["backend"] = json.loads(_canonical(record))
            for d in manifest["domains"]:
                name, files = d["name"], d["files"]
                if "index" in files:
                    manifest["files"].pop(files.pop("index"))
                if external is None:
                    p = gdir / "domains" / name / "index.bin"
                    p.parent.mkdir(parents=True)
                    h = info.hnsw
                    DomainIndex.build(info.aligned_vectors(name), space=h.space, M=h.M,
                                      ef_construction=h.ef_construction, ef_search=h.ef_search,
                                      seed=h.seed, threads=_index_threads(d["count"])).save(p)
                    fsync_file(p)
                    files["index"] = f"domains/{name}/index.bin"
                    manifest["files"][files["index"]] = _file_record(root, p)
            _commit(root, manifest, gdir, old)
        except BaseException:
            if _current_generation(root) != gen:
                shutil.rmtree(gdir, ignore_errors=True)
                if record is not None:
                    external.discard(record)
            raise
        _retire_external(info.backend, external, record)
        return read_bundle(root)


def _retire_external(old: dict | None, external: ExternalIndex | None, new: dict | None) -> None:
    """Drop the collections the replaced manifest used (after a commit that no longer needs them)."""
    if not old:
        return
    if external is not None:
        external.retire(old, new)
        return
    try:
        from .milvus import MilvusIndex

        previous = MilvusIndex(old["uri"])
    except (UemError, ValueError):
        return  # the old Milvus is unreachable: its collections are left for its operator
    try:
        previous.retire(old, None)
    finally:
        previous.close()
