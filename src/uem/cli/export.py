"""`uemctl export RUN -o model.uem` — int8 encoder + per-domain indexes + prototypes, in one bundle."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .root import app, err, out


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="A training run directory (config.json + encoder.pt)."),
    output: Path = typer.Option(..., "-o", "--out", help="Bundle directory to write (new, empty, or an existing bundle to replace)."),
    index: Optional[List[str]] = typer.Option(
        None, "--index", help="DOMAIN=DIR: index this folder as DOMAIN (repeatable). Default: the run's training domains."),
    calib: int = typer.Option(300, "--calib", help="Calibration images for int8, spread evenly over the training domains."),
    keep_fp32: bool = typer.Option(False, "--keep-fp32", help="Also store the fp32 encoder in the bundle."),
    seed: int = typer.Option(0, "--seed", help="Seed of the calibration / parity image draw."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    merge_rule: str = typer.Option("local", "--merge-rule", help="Which prototype pairs become cross-domain "
                                   "links for the open-set rule: local (per-pair bar) or global (UEM-METHOD.md's bar)."),
    open_set: str = typer.Option("contrast", "--open-set", help="Open-set rule: contrast (own-domain vs "
                                 "target neighbours, threshold set without labels) or prototype (UEM-METHOD.md's rule)."),
    to: Optional[str] = typer.Option(
        None, "--to", help="Serve the domains from Milvus: milvus://HOST:PORT, or a Milvus Lite file "
        "path ending in .db (needs uem[milvus]). Default: hnswlib indexes inside the bundle."),
) -> None:
    """Export RUN as a bundle the torch-free engine opens; prints the int8 parity report."""
    from ..export.pipeline import export_run, parse_index_args
    from ..export.scratch import process_scratch

    index_dirs = parse_index_args(index or [])
    with process_scratch():  # a killed export's temporaries go away with the next export
        summary = export_run(run, output, index_dirs=index_dirs or None, calib=calib, keep_fp32=keep_fp32,
                             seed=seed, progress=not quiet, log=err, to=to, merge_rule=merge_rule,
                             open_set=open_set)
    for line in summary.lines():
        out.print(line, markup=False)
    if not summary.parity.passed():
        err.print("warning: int8 parity below target (mean cos >= 0.995, top-10 overlap >= 0.9)", markup=False)
