"""The bundle format (versions 1 to 3): one directory holding an encoder, its domains' vectors,
items and indexes, the prototype graph and a checksummed manifest — what `uemctl export` writes
and the engine serves. This package is split by job; this file only re-exports their public names
(so `from uem.engine.bundle import X` keeps working):

    manifest.py   the manifest schema, format versions and their migration, checksums
    reader.py     the verifying reader: read_bundle -> BundleInfo, nothing unverified loaded
    store.py      the generation store: the one transaction (lock, generation, atomic commit, cleanup)
    writers.py    write_bundle, append_to_domain, reindex_bundle

An index kept outside the bundle (Milvus) reaches the writers through external_index.ExternalIndex;
no module here imports a backend.
"""

from ..external_index import ExternalIndex
from .manifest import (DOMAIN_NAME, ENCODER, ENCODER_FP32, FORMAT_NAME, FORMAT_VERSION, MANIFEST,
                       MAX_MANIFEST_BYTES, SUPPORTED_VERSIONS, DomainRecord, FileRecord, HnswParams,
                       Manifest, ModelRecord, PrototypesRecord, migrate, read_manifest, sha256_file)
from .manifest import checksum as _checksum
from .reader import BundleInfo, DomainInfo, FileEntry, read_bundle
from .store import _GENERATION, DEFAULT_LOCK_TIMEOUT_S, LOCK_FILE, Transaction, transaction
from .writers import DomainData, append_to_domain, reindex_bundle, write_bundle

__all__ = [
    "DOMAIN_NAME", "ENCODER", "ENCODER_FP32", "FORMAT_NAME", "FORMAT_VERSION", "MANIFEST",
    "MAX_MANIFEST_BYTES", "SUPPORTED_VERSIONS", "DomainRecord", "FileRecord", "HnswParams", "Manifest",
    "ModelRecord", "PrototypesRecord", "migrate", "read_manifest", "sha256_file",
    "BundleInfo", "DomainInfo", "FileEntry", "read_bundle",
    "DEFAULT_LOCK_TIMEOUT_S", "LOCK_FILE", "Transaction", "transaction",
    "DomainData", "append_to_domain", "reindex_bundle", "write_bundle", "ExternalIndex",
]
