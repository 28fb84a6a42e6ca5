"""The bundle format (FORMAT_VERSION 1): the one writer and the one verifying reader.

Logical layout — what the manifest describes, the names the rest of the code uses:

    manifest.json                    the commit record (see below)
    encoder.onnx                     int8 encoder; optional encoder.fp32.onnx
    domains/<name>/index.bin         hnswlib index over the domain's vectors (label = row number)
    domains/<name>/vectors.npy       float32 [count, dim], unit length
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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError, BundleVersionError  # noqa: F401  (raised by the functions below)
from .preprocess import PreprocessSpec
from .prototypes import PrototypeGraph

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
ENCODER = "encoder.onnx"
ENCODER_FP32 = "encoder.fp32.onnx"
DEFAULT_LOCK_TIMEOUT_S = 60.0


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

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, d: dict) -> "HnswParams": ...


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


@dataclass(frozen=True)
class FileEntry:
    """One verified file: where it lies and what it must hash to."""

    name: str        # logical name, e.g. "domains/sketch/index.bin"
    path: Path       # absolute physical path
    size: int
    sha256: str


@dataclass
class DomainInfo:
    """A verified domain: its count and files; items already parsed (the engine needs them)."""

    name: str
    count: int
    index: FileEntry
    vectors: FileEntry
    items_file: FileEntry
    items: list[dict] = field(repr=False, default_factory=list)


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

    def load_prototypes(self) -> PrototypeGraph:
        """The verified prototype graph (checked against embed_dim)."""
        ...

    def load_vectors(self, domain: str, *, mmap: bool = True) -> np.ndarray:
        """float32 [count, dim]; memory-mapped read-only by default."""
        ...


def read_bundle(path: str | Path) -> BundleInfo:
    """Open and fully verify the bundle at `path`. Raises BundleError / BundleVersionError.

    Retries a few times when a file vanished because a concurrent writer committed meanwhile.
    """
    ...


def write_bundle(path: str | Path, *, encoder_onnx: Path, encoder_fp32_onnx: Path | None,
                 preprocess: PreprocessSpec, embed_dim: int, domains: list[DomainData],
                 prototypes: PrototypeGraph, hnsw: HnswParams, calibration: dict,
                 extra: dict, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> None:
    """Write a complete bundle at `path` atomically (new, or replacing an existing bundle).

    The ONNX files are copied in (the sources are left alone). Builds one hnswlib index per domain.
    `calibration`: {"radius_scale": {target_domain: factor}} (may be {}) plus any other JSON the
    exporter wants kept; `extra`: JSON stored under manifest["model"]["extra"] (e.g. the parity
    report). Refuses to write into an existing directory that is neither empty nor a bundle.
    Raises BundleError (lock timeout, bad target) or ValueError (inconsistent inputs: a caller bug).
    """
    ...


def append_to_domain(path: str | Path, domain: str, vectors: np.ndarray, items: list[dict], *,
                     encoder_sha256: str | None = None,
                     lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> tuple[int, BundleInfo]:
    """Incremental add: append rows to one existing domain, committed atomically.

    Under the writer lock it re-reads the bundle from disk (so two processes adding never lose each
    other's rows), skips items whose id is already in the domain, extends that domain's index,
    vectors and items, and commits a generation holding only those three files. When
    `encoder_sha256` is given and the bundle's encoder differs (re-exported meanwhile), the vectors
    were made by another model: BundleError. Returns (rows added, the new verified BundleInfo).
    """
    ...
