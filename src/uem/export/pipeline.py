"""`uemctl export`: a training run -> a bundle the torch-free engine opens.

    run (or, with --pretrained, the ImageNet network's pooled trunk) -> ONNX fp32 -> int8
        (calibrated on the training domains) -> parity report
        -> embed every domain with the int8 model, through the engine's own preprocessing and encoder
        -> per-domain alignment, pair maps and CSLS statistics (uem.export.align)
        -> prototypes and open-set calibration on the aligned vectors -> write_bundle (atomic)

Everything that can be refused (not a run, an output that is not a bundle, a missing data folder) is
refused before the slow part starts.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..datasets.folders import list_images, scan
from ..engine.bundle import MANIFEST, DOMAIN_NAME, DomainData, write_bundle
from ..engine.encoder import Encoder as OnnxEncoder
from ..engine.errors import DataError, UemError
from ..engine.preprocess import PreprocessSpec, preprocess_batch
from ..train.run import load_encoder
from .config import DEFAULT_DIM, ExportConfig, bundle_dim
from .onnx import export_onnx, torch_embed
from .parity import ParityReport, parity_report
from .quantize import calibration_sample, quantize_int8
from .probes import wild_probes
from .pixels import preprocess_tolerant
from .reduce import projected_encoder
from .fit import fit_from_vectors

EMBED_CHUNK = 128


class ExportError(UemError):
    """An export that cannot start (bad run, bad output path, missing images)."""


@dataclass
class ExportSummary:
    out: Path
    domains: dict[str, int]
    parity: ParityReport
    quantization: dict
    sizes: dict[str, int]
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    prototypes: int = 0
    merged_links: int = 0

    def lines(self) -> list[str]:
        mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
        out = [f"bundle: {self.out}",
               "domains: " + ", ".join(f"{k} ({v})" for k, v in self.domains.items()),
               f"encoder: int8 {mb(self.sizes['encoder_int8'])} (fp32 {mb(self.sizes['encoder_fp32'])}); "
               f"{self.quantization['label']}",
               f"prototypes: {self.prototypes}, cross-domain links: {self.merged_links}",
               *self.parity.lines(),
               f"export took {self.seconds:.0f} s ("
               + ", ".join(f"{k} {v:.0f} s" for k, v in self.stages.items()) + ")"]
        for d, files in self.skipped.items():
            out.append(f"skipped {len(files)} unreadable image(s) in {d}, e.g. {files[0]}")
        return out


def parse_index_args(items: Sequence[str]) -> dict[str, Path]:
    """['sketch=/data/sk', ...] -> {'sketch': Path}; one-line errors for every malformed entry."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not name or not folder:
            raise ExportError(f"--index expects DOMAIN=DIR, got {item!r}")
        if not DOMAIN_NAME.match(name):
            raise ExportError(f"--index: bad domain name {name!r} (letters, digits, '.', '_', '-'; max 64)")
        if name in out:
            raise ExportError(f"--index: domain {name!r} given twice")
        out[name] = Path(folder).expanduser()
    return out


def check_output(out: Path, overwrite: bool = True) -> None:
    """Refuse an output path that is a file, or a non-empty folder that is not a bundle (or is one,
    unless `overwrite`)."""
    out = Path(out)
    if not overwrite and (out / MANIFEST).is_file():
        raise ExportError(f"{out}: a bundle is already there; refusing to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a bundle directory; choose another -o")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ExportError(f"{out}: exists, is not empty and is not a bundle; refusing to write into it")
    if not out.parent.exists():
        raise ExportError(f"{out.parent}: no such directory")


def _training_domains(data: str, domains: list[str]) -> dict[str, list[Path]]:
    if not data or not Path(data).is_dir():
        raise ExportError(f"the run's training data {data or '(none recorded)'} is not there; "
                          "pass --index DOMAIN=DIR for every domain to index")
    try:
        return scan(Path(data), domains or None, min_domains=1)
    except DataError as e:
        raise ExportError(str(e)) from None


def _index_domains(index_dirs: dict[str, Path]) -> dict[str, list[Path]]:
    out = {}
    for name, folder in index_dirs.items():
        try:
            files = list_images(folder)
        except DataError as e:
            raise ExportError(f"--index {name}={folder}: {e}") from None
        if not files:
            raise ExportError(f"--index {name}={folder}: no images found")
        out[name] = files
    return out


class _Stages:
    """Wall time per export stage (reported, so a slow export says where its time went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, progress: Progress, total: int | None = None) -> Iterator[int]:
        t = time.perf_counter()
        task = progress.add_task(name, total=total)
        try:
            yield task
        finally:
            progress.remove_task(task)
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 2)


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Progress]:
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not enabled) as p:
        yield p


def _embed_domain(paths: Sequence[Path], spec: PreprocessSpec, encoders: Sequence[OnnxEncoder],
                  progress: Progress, label: str) -> tuple[list[np.ndarray], list[Path], list[str]]:
    """Embed `paths` with each encoder (same preprocessed pixels); returns vectors, kept paths, bad."""
    task = progress.add_task(label, total=len(paths))
    parts: list[list[np.ndarray]] = [[] for _ in encoders]
    kept: list[Path] = []
    bad: list[str] = []
    for i in range(0, len(paths), EMBED_CHUNK):
        chunk = list(paths[i:i + EMBED_CHUNK])
        x, keep, b = preprocess_tolerant(chunk, spec)
        bad += b
        kept += [chunk[j] for j in keep]
        for k, enc in enumerate(encoders):
            parts[k].append(enc.embed(x))
        progress.advance(task, len(chunk))
    progress.remove_task(task)
    return [np.concatenate(p) for p in parts], kept, bad


def _held_out(domains: dict[str, list[Path]], exclude: set[Path], n: int, seed: int) -> dict[str, np.ndarray]:
    """Row numbers (into each domain's kept list) of up to n images per domain not used for calibration."""
    rng = np.random.default_rng(seed + 1)
    out = {}
    for d, files in domains.items():
        rows = np.array([i for i, f in enumerate(files) if f not in exclude], dtype=np.int64)
        if len(rows) == 0:  # tiny data sets: everything was calibration; compare on it anyway
            rows = np.arange(len(files))
        out[d] = np.sort(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return out


def export_run(run_dir: Path, out: Path, cfg: ExportConfig | None = None, *, progress: bool = True,
               log: Console | None = None) -> ExportSummary:
    """Export the run at `run_dir` into the bundle `out` with the settings `cfg` (default
    ExportConfig()): created, or — with cfg.overwrite — replaced if it is a bundle; the replacement
    is atomic, readers see the old or the new one.

    With cfg.to the domains are served from Milvus: one collection per domain instead of hnswlib
    files; vectors, items and prototypes stay in the bundle. It is connected to before the slow
    part starts. `progress`: rich progress bars on stderr; `log`: where notes go (stderr)."""
    t0 = time.perf_counter()
    cfg = cfg or ExportConfig()
    log = log or Console(stderr=True, highlight=False)
    run_dir, out = Path(run_dir), Path(out)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run directory")
    check_output(out, cfg.overwrite)
    encoder, train_cfg = load_encoder(run_dir)  # RunError (a UemError) when it is not a run
    return _export_encoder(encoder, train_cfg, run_dir, out, cfg, progress, log, t0)


def pretrained_config(data: Path, block: int = 13, size: int = 128, line_view: bool = True,
                      framing: str = "content"):
    """The TrainConfig of a bundle without training: the ImageNet network's pooled output of
    MBConv block `block` (0-15), for the image and (line_view) its line drawing, at `size` px,
    each picture framed by `framing` (uem.engine.framing)."""
    from ..train.config import ModelConfig, TrainConfig
    from ..train.model import trunk_channels

    if not 0 <= block <= 15:
        raise ExportError(f"--block must be 0..15 (the MBConv blocks), got {block}")
    if size < 32:
        raise ExportError(f"--size must be at least 32, got {size}")
    views = 2 if line_view else 1
    model = ModelConfig(input_size=size, embed_dim=views * trunk_channels(block + 1), line_view=line_view,
                        head="pooled", freeze_blocks=block + 1, framing=framing)
    try:
        domains = list(scan(Path(data), None, min_domains=1))
    except DataError as e:
        raise ExportError(str(e)) from None
    return TrainConfig(data=str(Path(data).resolve()), domains=domains, model=model, epochs_idse=0, epochs_cdsm=0,
                       epochs_pairs=0)


def export_pretrained(data: Path, out: Path, cfg: ExportConfig | None = None, *, block: int = 13,
                      size: int = 128, line_view: bool = True, framing: str = "content",
                      progress: bool = True, log: Console | None = None) -> ExportSummary:
    """A bundle without training: the ImageNet network read out at `block` (pretrained_config),
    aligned per domain like any bundle, for DATA/<domain>/... (no labels read); `cfg`, `progress`
    and `log` as for export_run."""
    t0 = time.perf_counter()
    cfg = cfg or ExportConfig()
    log = log or Console(stderr=True, highlight=False)
    from ..train.model import build_encoder

    if not Path(data).is_dir():
        raise ExportError(f"{data}: no such data folder")
    check_output(Path(out), cfg.overwrite)
    train_cfg = pretrained_config(Path(data), block, size, line_view, framing)
    encoder = build_encoder(train_cfg.model, pretrained=True).eval()
    return _export_encoder(encoder, train_cfg, None, Path(out), cfg, progress, log, t0)


def _export_encoder(encoder, train_cfg, run_dir: Path | None, out: Path, cfg: ExportConfig, progress: bool,
                    log: Console, t0: float) -> ExportSummary:
    if cfg.index_dirs:
        targets = _index_domains(cfg.index_dirs)
        roots = dict(cfg.index_dirs)
        try:
            train = _training_domains(train_cfg.data, train_cfg.domains)
        except ExportError:
            train = targets  # training images gone: calibrate on what we index
            log.print("note: the run's training data is not available; calibrating on the --index images")
    else:
        train = targets = _training_domains(train_cfg.data, train_cfg.domains)
        roots = {d: Path(train_cfg.data) / d for d in targets}
    for d in targets:
        if not DOMAIN_NAME.match(d):
            raise ExportError(f"domain folder name {d!r} cannot be a bundle domain name; rename it or use --index")
    try:  # the default width is for trained runs; an untrained read-out keeps its own
        dim = bundle_dim(cfg.dim, train_cfg.model.embed_dim, DEFAULT_DIM if run_dir is not None else None)
    except ValueError as e:
        raise ExportError(str(e)) from None
    if cfg.to is not None:
        _open_external(cfg.to).close()  # reachable? (a wrong address fails before the slow part)
    return _export(run_dir, out, encoder, train_cfg, train, targets, roots, cfg, dim, progress, t0, log)


def _open_external(to: str, progress=None):
    """A connection to the Milvus the domains go to."""
    from ..engine.milvus import MilvusIndex

    return MilvusIndex(to, progress=progress)


def _export(run_dir, out, encoder, train_cfg, train, targets, roots, cfg: ExportConfig, dim: int,
            progress: bool, t0: float, log: Console) -> ExportSummary:
    spec = train_cfg.model.preprocess()
    seed, quant = cfg.seed, cfg.quant
    calib_paths = calibration_sample(train, cfg.calib, seed=seed)
    stage = _Stages()
    embed_dim, projection = train_cfg.model.embed_dim, None
    with tempfile.TemporaryDirectory(prefix="uem-export-") as tmp, _progress(progress) as prog:
        work = Path(tmp)
        if dim != embed_dim:
            with stage(f"projection to {dim}-d", prog):
                try:
                    encoder, projection = projected_encoder(encoder, train, spec, dim, seed)
                    embed_dim = dim
                except ValueError as e:  # too few images for `dim` directions
                    if cfg.dim is not None:  # asked for: refuse; the default: keep the model's width
                        raise ExportError(str(e)) from None
                    log.print(f"note: keeping the model's {embed_dim}-d embedding ({e})")
        with stage("ONNX export", prog):
            fp32_path = export_onnx(encoder, work / "encoder.fp32.onnx", spec.size)
        with stage("calibration images", prog, len(calib_paths)) as task:
            calib_x, _, bad_calib = preprocess_tolerant(calib_paths, spec)
            prog.update(task, completed=len(calib_paths))
        if len(calib_x) == 0:
            raise ExportError("no readable calibration image")
        with stage("int8 quantization", prog):
            int8_path = quantize_int8(fp32_path, work / "encoder.onnx", calib_x, quant)

        enc8 = OnnxEncoder(int8_path)
        enc32 = OnnxEncoder(fp32_path)
        vectors: dict[str, np.ndarray] = {}
        fp32_vectors: dict[str, np.ndarray] = {}
        kept: dict[str, list[Path]] = {}
        skipped: dict[str, list[str]] = {}
        with stage("embedding (int8 + fp32)", prog):
            for d, files in targets.items():
                (v8, v32), kept[d], bad = _embed_domain(files, spec, [enc8, enc32], prog, f"embedding {d}")
                if len(kept[d]) == 0:
                    raise ExportError(f"domain {d}: none of its {len(files)} images could be read")
                vectors[d], fp32_vectors[d] = v8, v32
                if bad:
                    skipped[d] = bad

        with stage("parity vs torch", prog):
            held = _held_out(kept, set(calib_paths), cfg.parity_per_domain, seed)
            torch_vecs = {}
            for d, rows in held.items():
                x = preprocess_batch([kept[d][i] for i in rows], spec)
                torch_vecs[d] = torch_embed(encoder, x)
            report = parity_report(torch_vecs, {d: fp32_vectors[d][r] for d, r in held.items()},
                                   {d: vectors[d][r] for d, r in held.items()}, k=10,
                                   database_ref=fp32_vectors, database_test=vectors)

        probes = probe_rows = None
        if cfg.probes:
            with stage("wild probes", prog, sum(min(cfg.probes, len(k)) for k in kept.values())) as task:
                probes, probe_rows = wild_probes(kept, spec, enc8.embed, seed=seed, n=cfg.probes,
                                                 advance=lambda n: prog.advance(task, n))
        with stage("alignment, prototypes, open-set calibration", prog):
            fitted = fit_from_vectors(vectors, cfg.align, merge_rule=cfg.merge_rule, open_set=cfg.open_set,
                                      merge=train_cfg.merges, k_prototypes=cfg.k_prototypes,
                                      proto_seed=train_cfg.seed, seed=seed, open_set_alpha=cfg.open_set_alpha,
                                      probes=probes, probe_rows=probe_rows)
        alignment, align_log, graph, calibration = fitted

        quant_info = {**quant.to_dict(), "label": quant.label(), "calibration_images": int(len(calib_x)),
                      "calibration_seed": seed}
        sizes = {"encoder_int8": os.path.getsize(int8_path), "encoder_fp32": os.path.getsize(fp32_path)}
        extra = {"parity": report.to_dict(), "quantization": quant_info, "sizes": sizes,
                 "merge_rule": cfg.merge_rule, "open_set_rule": cfg.open_set,
                 "source_run": None if run_dir is None else str(run_dir.resolve()),
                 "pretrained": run_dir is None, "alignment": align_log, "train_config": train_cfg.to_dict(),
                 "skipped_images": {d: len(v) for d, v in skipped.items()},
                 "export_seconds": stage.seconds, "versions": _versions(), "projection": projection}
        with stage("bundle (HNSW indexes)" if cfg.to is None else "bundle + Milvus collections", prog):
            external = None
            if cfg.to is not None:
                tasks: dict[str, int] = {}

                def uploaded(d: str, done: int, total: int) -> None:
                    if d not in tasks:
                        tasks[d] = prog.add_task(f"Milvus: {d}", total=total)
                    prog.update(tasks[d], completed=done)

                external = _open_external(cfg.to, uploaded)
            domains = [DomainData(name=d, vectors=vectors[d],
                                  items=[{"id": _item_id(p, roots[d]), "path": str(Path(p).resolve())}
                                         for p in kept[d]])
                       for d in targets]
            try:
                write_bundle(out, encoder_onnx=int8_path, encoder_fp32_onnx=fp32_path if cfg.keep_fp32 else None,
                             preprocess=spec, embed_dim=embed_dim, domains=domains,
                             prototypes=graph, hnsw=cfg.hnsw, calibration=calibration, extra=extra, external=external,
                             alignment=alignment)
            finally:
                if external is not None:
                    external.close()
    if bad_calib:
        skipped.setdefault("calibration", []).extend(bad_calib)
    return ExportSummary(out=out, domains={d: len(v) for d, v in vectors.items()}, parity=report,
                         quantization=quant_info, sizes=sizes, seconds=time.perf_counter() - t0,
                         stages=stage.seconds, skipped=skipped, prototypes=int(len(graph.centroids)), merged_links=int(len(graph.links)))


def _item_id(path: Path, root: Path) -> str:
    """The path below the domain folder: unique within the domain, stable across machines."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _versions() -> dict:
    import onnx
    import onnxruntime
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
