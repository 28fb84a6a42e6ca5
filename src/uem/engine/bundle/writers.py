"""The bundle writers: a whole bundle (`write_bundle`), an incremental add (`append_to_domain`) and
moving the indexes in or out of the bundle (`reindex_bundle`), with the input checks and file
writers they share.

Each one is a single store.transaction (lock, new generation, write, commit, collect garbage); this
module decides what goes into the generation and into the manifest (manifest.py). An index kept
outside the bundle comes in as an `external_index.ExternalIndex`; when a writer needs the one a committed
manifest names (an add to an externally indexed domain, dropping collections a rewrite replaced)
and none was handed in, `external_index.connect` opens it — this module never imports a backend itself.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..align import ALIGNMENT_NPZ, IDENTITY, Alignment, csls_item_stats
from ..csls import exact_mean_top_k
from ..atomic import durable_file, fsync_file
from ..errors import BundleError, UemError
from ..external_index import ExternalIndex, connect
from ..geometry import unit_rows
from ..index import DomainIndex
from ..preprocess import PreprocessSpec
from ..prototypes import PROTOTYPES_JSON, PROTOTYPES_NPY, PrototypeGraph
from .manifest import (DOMAIN_NAME, ENCODER, ENCODER_FP32, DomainRecord, HnswParams, Manifest,
                       ModelRecord, PrototypesRecord, canonical, plain_json)
from .reader import BundleInfo, read_bundle
from .store import DEFAULT_LOCK_TIMEOUT_S, current_manifest_or_none, transaction


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
    canonical({"calibration": calibration, "extra": extra})  # fail early if not JSON
    order = [d.name for d in domains]
    aligned = {d.name: alignment.align(v, d.name) for d, (v, _) in zip(domains, checked)}
    csls = csls_item_stats(aligned, alignment, order) if alignment.csls.enabled else {}
    for src in (encoder_onnx, encoder_fp32_onnx):
        if src is not None and not Path(src).is_file():
            raise ValueError(f"{src}: no such ONNX file")

    with transaction(root, lock_timeout, create=True) as txn:
        old = current_manifest_or_none(root)
        if expect_generation is not None and (old or {}).get("generation") != expect_generation:
            raise BundleError(f"{root}: the bundle changed on disk meanwhile (another write committed); "
                              "nothing was written, run it again")
        gdir = txn.begin(old)
        written: dict[str, Path] = {ENCODER: gdir / ENCODER}
        _copy_file(Path(encoder_onnx), written[ENCODER])
        if encoder_fp32_onnx is not None:
            written[ENCODER_FP32] = gdir / ENCODER_FP32
            _copy_file(Path(encoder_fp32_onnx), written[ENCODER_FP32])
        if alignment.active:
            written[ALIGNMENT_NPZ] = _save_alignment(gdir, alignment)
        records = []
        for d, (vecs, items) in zip(domains, checked):
            index = None if external is not None else _build_index(aligned[d.name], hnsw)
            paths = _write_domain_files(gdir, d.name, vecs, items, index, csls.get(d.name))
            logical = {k: f"domains/{d.name}/{p.name}" for k, p in paths.items()}
            written.update({logical[k]: p for k, p in paths.items()})
            records.append(DomainRecord(d.name, len(vecs), logical))
        prototypes.save(gdir)
        for n in (PROTOTYPES_NPY, PROTOTYPES_JSON):
            written[n] = gdir / n
            fsync_file(written[n])
        record = None
        if external is not None:
            record = external.create(root, [(d.name, aligned[d.name], it) for d, (_, it) in zip(domains, checked)],
                                     hnsw, dim)
            txn.on_abort(lambda: external.discard(record))
        model = ModelRecord(encoder=ENCODER, encoder_fp32=ENCODER_FP32 if encoder_fp32_onnx is not None else None,
                            preprocess=preprocess, embed_dim=dim, opset=_onnx_opset(Path(encoder_onnx)),
                            extra=plain_json(extra))
        txn.commit(Manifest(
            model=model, hnsw=hnsw, domains=records,
            prototypes=PrototypesRecord(PROTOTYPES_NPY, PROTOTYPES_JSON, int(len(prototypes.centroids)),
                                        list(prototypes.domains)),
            files={n: txn.record(p) for n, p in written.items()}, calibration=plain_json(calibration),
            alignment=plain_json(_alignment_record(alignment, order)) if alignment.active else None,
            backend=None if record is None else plain_json(record)))
        _retire_external((old or {}).get("backend"), external, record)


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
    with transaction(root, lock_timeout) as txn:
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
            ext = external if external is not None else connect(info.backend)  # the manifest's own
            try:
                ext.append(info.backend, domain, new_aligned, dom.count, new_items)
            finally:
                if ext is not external:
                    ext.close()
        else:
            index = info.load_index(domain, extra_capacity=len(vecs))
            index.add(new_aligned, first_label=dom.count, threads=_index_threads(len(vecs)))
        csls = _csls_after_add(info, domain, all_vecs) if info.alignment.csls.enabled else {}
        gdir = txn.begin(info.manifest)
        manifest = Manifest.upgrade(info.manifest)
        for d in manifest.domains:
            if d.name == domain:
                paths = _write_domain_files(gdir, domain, all_vecs, dom.items + new_items, index,
                                            csls.get(domain))
                d.count = len(all_vecs)
            elif d.name in csls:
                paths = _write_domain_files(gdir, d.name, None, None, None, csls[d.name])
            else:
                continue
            for key, p in paths.items():
                manifest.files[d.files[key]] = txn.record(p)
        txn.commit(manifest)
        return len(vecs), read_bundle(root)


def reindex_bundle(path: str | Path, external: ExternalIndex | None, *,
                   lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> BundleInfo:
    """Move every domain's index to `external` (e.g. Milvus), or back into hnswlib files (None).

    Possible because the bundle keeps each domain's vectors + items: nothing is re-embedded and
    the encoder, prototypes and calibration are untouched. Commits like any write (a new
    generation, then the manifest); the collections the bundle used before are dropped afterwards.
    """
    root = Path(path)
    with transaction(root, lock_timeout) as txn:
        info = read_bundle(root)
        gdir = txn.begin(info.manifest)
        manifest = Manifest.upgrade(info.manifest)
        manifest.backend = record = None
        if external is not None:
            record = external.create(root, [(n, info.aligned_vectors(n), d.items)
                                            for n, d in info.domains.items()],
                                     info.hnsw, info.embed_dim)
            txn.on_abort(lambda: external.discard(record))
            manifest.backend = plain_json(record)
        for d in manifest.domains:
            if "index" in d.files:
                manifest.files.pop(d.files.pop("index"))
            if external is None:
                p = gdir / "domains" / d.name / "index.bin"
                p.parent.mkdir(parents=True)
                _build_index(info.aligned_vectors(d.name), info.hnsw).save(p)
                fsync_file(p)
                d.files["index"] = f"domains/{d.name}/index.bin"
                manifest.files[d.files["index"]] = txn.record(p)
        txn.commit(manifest)
        _retire_external(info.backend, external, record)
        return read_bundle(root)


# ---------------------------------------------------------------------------------------------
# inputs


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
    """The vectors a domain stores: finite, (N, dim), unit rows (already-unit rows keep their bits,
    so a realign or an add rewrites stored vectors as they are)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"{what}: vectors have shape {v.shape}, expected (N, {dim})")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what}: vectors contain NaN or infinity")
    try:
        return unit_rows(v, allow_zero=False)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


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
            canonical(it)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}: item {i} is not JSON-serialisable ({e})") from None
        out.append(it)
    return out


# ---------------------------------------------------------------------------------------------
# what goes into a generation


def _index_threads(n: int) -> int:
    return 1 if n < 20000 else max(1, os.cpu_count() or 1)


def _build_index(aligned: np.ndarray, hnsw: HnswParams) -> DomainIndex:
    return DomainIndex.build(aligned, space=hnsw.space, M=hnsw.M, ef_construction=hnsw.ef_construction,
                             ef_search=hnsw.ef_search, seed=hnsw.seed, threads=_index_threads(len(aligned)))


def _copy_file(src: Path, dst: Path) -> None:
    try:
        with open(src, "rb") as fi, durable_file(dst) as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
    except FileNotFoundError:
        raise ValueError(f"{src}: no such file") from None


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
        with durable_file(paths["vectors"]) as f:
            np.save(f, vecs, allow_pickle=False)
    if items is not None:
        paths["items"] = ddir / "items.jsonl"
        with durable_file(paths["items"]) as f:
            f.writelines(canonical(it) + b"\n" for it in items)
    if csls is not None:
        paths["csls"] = ddir / "csls.npy"
        with durable_file(paths["csls"]) as f:
            np.save(f, np.ascontiguousarray(csls, dtype=np.float32), allow_pickle=False)
    return paths


def _save_alignment(gdir: Path, alignment: Alignment) -> Path:
    path = gdir / ALIGNMENT_NPZ
    with durable_file(path) as f:
        np.savez(f, **alignment.arrays())
    return path


def _alignment_record(alignment: Alignment, order: list[str]) -> dict:
    return {**alignment.describe(), "file": ALIGNMENT_NPZ, "csls_columns": list(order)}


def _onnx_opset(path: Path) -> int | None:
    """The default-domain opset of an ONNX file when the onnx package is present (no torch)."""
    try:
        import onnx

        m = onnx.load(str(path), load_external_data=False)
        return next((int(o.version) for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    except Exception:  # optional fact; any failure just leaves it unknown
        return None


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


def _retire_external(old: dict | None, external: ExternalIndex | None, new: dict | None) -> None:
    """Drop the collections the replaced manifest used (after a commit that no longer needs them)."""
    if not old:
        return
    if external is not None:
        external.retire(old, new)
        return
    try:
        previous = connect(old)
    except (UemError, ValueError):
        return  # the old backend is unreachable: its collections are left for its operator
    try:
        previous.retire(old, None)
    finally:
        previous.close()
