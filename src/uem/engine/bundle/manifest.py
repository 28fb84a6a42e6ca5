"""The manifest schema: what `manifest.json` records, its versions, and how it is checksummed.

Logical layout — what the manifest describes, the names the rest of the code uses:

    manifest.json                    the commit record (this module)
    encoder.onnx                     int8 encoder; optional encoder.fp32.onnx
    domains/<name>/index.bin         hnswlib index over the domain's ALIGNED vectors (label = row)
    domains/<name>/vectors.npy       float32 [count, dim], unit length: the raw encoder output
    domains/<name>/csls.npy          optional float32 [count, domains]: CSLS statistics (align.py)
    alignment.npz                    optional per-domain means / whiteners / pair maps (align.py)
    domains/<name>/items.jsonl       one JSON object per row: {"id": str, "path": str, ...metadata}
    prototypes.npy + prototypes.json the PrototypeGraph (open-set rejection)

`manifest["files"]` maps each logical name to a physical path (see store.py) + size + sha256;
`manifest["checksum"]` is the sha256 of the canonical JSON of everything else.

Versions. Version 2 added the alignment (alignment.npz, each domain's csls.npy, the "alignment"
record) and indexes that hold aligned vectors. Version 3 added content framing (the model's
preprocess records "framing": "content") and the alignment's probes (wild copies' embeddings).
`migrate` upgrades any version this code reads to the newest schema in memory (1 -> 2: a version-1
bundle is a version-2 one without an alignment; 2 -> 3: a version-2 bundle letter-boxes and has no
probes), so `Manifest.from_dict` knows one schema; a version newer than FORMAT_VERSION is refused
with BundleVersionError. A version-1 manifest carrying an alignment is refused: an older writer
would have appended raw vectors to an aligned index; likewise a version-2 one that frames content.
`Manifest.to_dict` writes the oldest version that holds its content — 1 without an alignment, 2
with one but letter-boxed, so an older uem keeps reading it — and, for any manifest a uem wrote,
the same JSON as before (same keys, same order, same checksum); keys outside
the schema (none was ever written) are not carried over by a rewrite.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np

from ..errors import BundleError, BundleVersionError
from ..index import SPACES
from ..preprocess import PreprocessSpec

FORMAT_NAME = "uem-bundle"
FORMAT_VERSION = 3                 # the newest version this uem reads (and writes, with content framing)
MANIFEST = "manifest.json"
ENCODER = "encoder.onnx"
ENCODER_FP32 = "encoder.fp32.onnx"
MAX_MANIFEST_BYTES = 64 << 20
DOMAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# ---------------------------------------------------------------------------------------------
# versions


def _v1_to_v2(m: dict) -> dict:
    """Version 2 only added optional content (the alignment), so a version-1 manifest is a valid
    version-2 one once relabelled — unless it already carries an alignment (tampering, or a writer
    that would have appended raw rows to an aligned index)."""
    if m.get("alignment"):
        raise ValueError("an alignment in a version-1 bundle")
    return {**m, "format_version": 2}


def _v2_to_v3(m: dict) -> dict:
    """Version 3 added content framing (model.preprocess.framing) and the alignment's probes; a
    version-2 bundle letter-boxes whole pictures (what a missing "framing" means) and has no probes,
    so it is a version-3 one once relabelled — unless it carries either (an older reader would
    letter-box the queries of a bundle whose items were framed)."""
    model, align = m.get("model"), m.get("alignment")   # anything malformed is refused later, by the schema
    pre = model.get("preprocess") if isinstance(model, dict) else None
    framing = pre.get("framing", "letterbox") if isinstance(pre, dict) else "letterbox"
    if _needs_v3(framing, align if isinstance(align, dict) else None):
        raise ValueError("content framing or probes in a version-2 bundle")
    return {**m, "format_version": 3}


def _needs_v3(framing: str, alignment: dict | None) -> bool:
    """What only version 3 holds: framing other than the letter-box, or the alignment's probes."""
    return framing != "letterbox" or bool((alignment or {}).get("probes"))


# version v -> the function upgrading a version-v manifest to version v + 1
_UPGRADES: dict[int, Callable[[dict], dict]] = {1: _v1_to_v2, 2: _v2_to_v3}
SUPPORTED_VERSIONS = (*sorted(_UPGRADES), FORMAT_VERSION)


def migrate(manifest: dict) -> dict:
    """The manifest upgraded to FORMAT_VERSION, in memory (a new dict; `manifest` is left alone).

    BundleVersionError for a version this code does not know (e.g. newer); ValueError when the
    content does not fit its version."""
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        raise BundleVersionError(f"bundle format version {version} is not supported "
                                 f"(this uem reads versions {', '.join(map(str, SUPPORTED_VERSIONS))})")
    out = dict(manifest)
    while version < FORMAT_VERSION:
        out = _UPGRADES[version](out)
        version += 1
    return out


# ---------------------------------------------------------------------------------------------
# canonical JSON, checksums


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, PurePosixPath)):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def canonical(obj: Any) -> bytes:
    """The one JSON form that is hashed (and written for items): sorted keys, ASCII, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False, default=_json_default).encode("ascii")


def plain_json(obj: Any) -> Any:
    """`obj` as plain JSON values (numpy scalars/arrays and paths converted); ValueError/TypeError
    when it cannot be stored."""
    return json.loads(canonical(obj))


def checksum(manifest: dict) -> str:
    """The manifest's own checksum: sha256 of the canonical JSON of every key but "checksum"."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(canonical(body)).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(root: Path) -> dict:
    """Parse `root`/manifest.json and check its format, version and own checksum; returns it as
    on disk (any supported version; `migrate` it for the newest schema). Raises BundleError /
    BundleVersionError."""
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
    try:
        migrate(manifest)  # refuses what this code cannot read, before the checksum is looked at
    except BundleVersionError as e:
        raise BundleVersionError(f"{root}: {e}") from None
    except ValueError as e:
        raise BundleError(f"{mpath}: corrupt manifest ({e})") from None
    try:
        ok = manifest.get("checksum") == checksum(manifest)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise BundleError(f"{mpath}: manifest checksum mismatch (corrupt or edited)")
    return manifest


# ---------------------------------------------------------------------------------------------
# the schema (newest version). from_dict reads a migrated manifest: it raises KeyError, TypeError
# or ValueError on a malformed one (the reader reports those as a corrupt manifest) and leaves
# file names, paths, sizes and digests as found — the reader verifies those against the files.


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
class FileRecord:
    """manifest["files"][logical name]: where the file lies (relative to the bundle) and its hash."""

    path: Any        # str when well-formed; the reader checks it stays inside the bundle
    size: Any        # int when well-formed
    sha256: Any      # str when well-formed

    def to_dict(self) -> dict:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, d: Any, name: str) -> "FileRecord":
        if not isinstance(d, dict):
            raise ValueError(f"entry for {name!r} is not an object")
        return cls(d.get("path"), d.get("size"), d.get("sha256"))


@dataclass
class DomainRecord:
    """One domain: its row count and the logical names of its files by role
    ("index" (absent when an external backend serves it), "vectors", "items", optional "csls")."""

    name: str
    count: int
    files: dict[str, Any]

    def to_dict(self) -> dict:
        return {"name": self.name, "count": self.count, "files": dict(self.files)}

    @classmethod
    def from_dict(cls, d: dict) -> "DomainRecord":
        files = d["files"]
        if not isinstance(files, dict):
            raise TypeError(f"files of domain {d['name']!r} is not an object")
        return cls(str(d["name"]), int(d["count"]), dict(files))


@dataclass
class ModelRecord:
    """The encoder files (logical names), what they expect and produce, and the exporter's notes."""

    encoder: Any
    encoder_fp32: Any            # None: no fp32 encoder kept
    preprocess: PreprocessSpec
    embed_dim: int
    opset: Any = None            # the ONNX default-domain opset when known
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "encoder_fp32": self.encoder_fp32,
                "preprocess": self.preprocess.to_dict(), "embed_dim": self.embed_dim,
                "opset": self.opset, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelRecord":
        extra = d.get("extra") or {}
        if not isinstance(extra, dict):
            raise ValueError("calibration/extra must be objects")
        return cls(encoder=d["encoder"], encoder_fp32=d.get("encoder_fp32"),
                   preprocess=PreprocessSpec.from_dict(d["preprocess"]), embed_dim=int(d["embed_dim"]),
                   opset=d.get("opset"), extra=copy.deepcopy(extra))


@dataclass
class PrototypesRecord:
    """The prototype graph's two files (logical names) and, for people, its size and domains."""

    centroids: Any
    graph: Any
    count: Any = None
    domains: Any = None

    def to_dict(self) -> dict:
        return {"centroids": self.centroids, "graph": self.graph, "count": self.count,
                "domains": self.domains}

    @classmethod
    def from_dict(cls, d: dict) -> "PrototypesRecord":
        return cls(d["centroids"], d["graph"], d.get("count"), copy.deepcopy(d.get("domains")))


@dataclass
class Manifest:
    """A manifest in the newest schema. `generation` and `written_at` are stamped by the commit
    (store.Transaction.commit); "format", "format_version" and "checksum" are derived on write."""

    model: ModelRecord
    hnsw: HnswParams
    domains: list[DomainRecord]
    prototypes: PrototypesRecord
    files: dict[str, FileRecord]
    calibration: dict = field(default_factory=dict)
    alignment: dict | None = None    # align.Alignment.describe() + "file" + "csls_columns"
    backend: dict | None = None      # an ExternalIndex's record (external_index.py), or None: hnswlib
    generation: int = 0
    written_at: str | None = None

    @property
    def format_version(self) -> int:
        """The oldest version that holds this content (1 and 2 stay readable by an older uem)."""
        if _needs_v3(self.model.preprocess.framing, self.alignment):
            return 3
        return 2 if self.alignment else 1

    def to_dict(self) -> dict:
        """The on-disk form, keys in the order every writer has used (checksum not included)."""
        out = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "generation": self.generation,
            "written_at": self.written_at,
            "model": self.model.to_dict(),
            "hnsw": {**self.hnsw.to_dict(), "dim": self.model.embed_dim},
            "domains": [d.to_dict() for d in self.domains],
            "prototypes": self.prototypes.to_dict(),
            "calibration": self.calibration,
            "files": {n: r.to_dict() for n, r in self.files.items()},
        }
        if self.alignment:
            out["alignment"] = self.alignment
        if self.backend is not None:
            out["backend"] = self.backend
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        """A migrated manifest dict (see `migrate`) -> Manifest; shares no containers with `d`."""
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a version-{FORMAT_VERSION} manifest (migrate it first)")
        model, hnsw_d = ModelRecord.from_dict(d["model"]), d["hnsw"]
        dim = model.embed_dim
        hnsw = HnswParams.from_dict(hnsw_d)
        if int(hnsw_d["dim"]) != dim or dim <= 0:
            raise ValueError(f"hnsw dim {hnsw_d['dim']} != embed_dim {dim}")
        files = d["files"]
        if not isinstance(files, dict):
            raise ValueError("files is not an object")
        calibration = d.get("calibration") or {}
        if not isinstance(calibration, dict):
            raise ValueError("calibration/extra must be objects")
        return cls(model=model, hnsw=hnsw, domains=[DomainRecord.from_dict(x) for x in d["domains"]],
                   prototypes=PrototypesRecord.from_dict(d["prototypes"]),
                   files={n: FileRecord.from_dict(e, n) for n, e in files.items()},
                   calibration=copy.deepcopy(calibration), alignment=copy.deepcopy(d.get("alignment")),
                   backend=copy.deepcopy(d.get("backend")), generation=int(d["generation"]),
                   written_at=d.get("written_at"))

    @classmethod
    def upgrade(cls, d: dict) -> "Manifest":
        """A verified manifest of any supported version (read_manifest) -> Manifest."""
        return cls.from_dict(migrate(d))
