"""`uemctl export RUN -o model.uem` (or `--pretrained DATA`) — int8 encoder + aligned per-domain
indexes + prototypes, in one bundle."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..export.align import AlignConfig
from ..export.config import DEFAULT_DIM, ExportConfig
from .root import app, err, out


@app.command("export")
def export_cmd(
    run: Optional[Path] = typer.Argument(None, help="A training run directory (config.json + encoder.pt); "
                                         "omit it with --pretrained."),
    output: Path = typer.Option(..., "-o", "--out", help="Bundle directory to write (new, empty, or an existing bundle to replace)."),
    index: Optional[List[str]] = typer.Option(
        None, "--index", help="DOMAIN=DIR: index this folder as DOMAIN (repeatable). Default: the run's training domains."),
    calib: int = typer.Option(ExportConfig.calib, "--calib", help="Calibration images for int8, spread evenly over the training domains."),
    keep_fp32: bool = typer.Option(ExportConfig.keep_fp32, "--keep-fp32", help="Also store the fp32 encoder in the bundle."),
    seed: int = typer.Option(ExportConfig.seed, "--seed", help="Seed of the calibration / parity image draw."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    merge_rule: str = typer.Option(ExportConfig.merge_rule, "--merge-rule", help="Which prototype pairs become cross-domain "
                                   "links for the open-set rule: local (per-pair bar) or global (the paper's bar, docs/method.md)."),
    open_set: str = typer.Option(ExportConfig.open_set, "--open-set", help="Open-set rule: anchored (closest target "
                                 "item vs the distances of confident matches, no labels), contrast (own-domain vs "
                                 "target neighbours, Otsu's threshold) or prototype (the paper's rule, docs/method.md)."),
    open_set_alpha: float = typer.Option(ExportConfig.open_set_alpha, "--open-set-alpha", help="anchored rule: "
                                         "share of confident matches it may answer 'no match' (0-1); lower "
                                         "refuses less, and detects fewer missing concepts."),
    to: Optional[str] = typer.Option(
        None, "--to", help="Serve the domains from Milvus: milvus://HOST:PORT, or a Milvus Lite file "
        "path ending in .db (needs uem[milvus]). Default: hnswlib indexes inside the bundle."),
    pretrained: Optional[Path] = typer.Option(
        None, "--pretrained", help="DATA: build a bundle without training, from the ImageNet network "
        "read out at --block, for DATA/<domain>/... images."),
    block: int = typer.Option(13, "--block", help="--pretrained: the MBConv block (0-15) whose pooled output is the embedding."),
    size: int = typer.Option(128, "--size", help="--pretrained: input size in pixels."),
    no_line_view: bool = typer.Option(False, "--no-line-view", help="--pretrained: the image alone, without its line drawing."),
    framing: Optional[str] = typer.Option(None, "--framing", help="--pretrained: content (the default: crop to what is drawn, "
                                "plain backdrop to white) or letterbox (the whole canvas)."),
    align: str = typer.Option(AlignConfig.kind, "--align", help="Per-domain alignment: whiten (mean + shrunk ZCA), mean, or none."),
    shrinkage: float = typer.Option(AlignConfig.shrinkage, "--shrinkage", help="Whitening shrinkage, times each domain's mean eigenvalue."),
    maps: bool = typer.Option(AlignConfig.maps, "--maps/--no-maps", help="Self-learned cross-domain maps "
                              "(they lift category mAP; identity of new pictures measured lower with them)."),
    csls_k: int = typer.Option(AlignConfig.csls_k, "--csls-k", help="CSLS neighbours (0: rank by cosine)."),
    csls_candidates: int = typer.Option(AlignConfig.csls_candidates, "--csls-candidates", help="Index hits re-ranked by CSLS per query."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Embedding width of the bundle, a projection fitted at "
                                      f"export (e.g. 128, 512); 0: the model's full width. Default: {DEFAULT_DIM}, "
                                      "or the model's width if narrower.", show_default=False),
    probes: int = typer.Option(ExportConfig.probes, "--probes", help="Wild copies per domain (moved, scaled, on "
                               "backdrops) the \"no match\" rule is calibrated with as well (0: none)."),
) -> None:
    """Export RUN (or, with --pretrained, the untrained network) as a bundle the torch-free engine
    opens; prints the int8 parity report."""
    from ..export.pipeline import ExportError, export_pretrained, export_run, parse_index_args
    from ..export.scratch import process_scratch

    if (run is None) == (pretrained is None):
        raise ExportError("give a training RUN or --pretrained DATA (one of the two)")
    if run is not None and framing is not None:
        raise ExportError("--framing is for --pretrained; a run's bundle frames as the run was trained")
    try:  # the options are ExportConfig's and AlignConfig's fields
        cfg = ExportConfig(index_dirs=parse_index_args(index or []) or None, calib=calib, keep_fp32=keep_fp32,
                           seed=seed, to=to, merge_rule=merge_rule, probes=probes, dim=dim, open_set=open_set, open_set_alpha=open_set_alpha,
                           align=AlignConfig(kind=align, shrinkage=shrinkage, maps=maps, csls_k=csls_k,
                                             csls_candidates=max(csls_candidates, csls_k, 1)))
    except ValueError as e:  # AlignConfig's are plain ValueErrors
        raise ExportError(str(e)) from None
    with process_scratch():  # a killed export's temporaries go away with the next export
        if pretrained is not None:
            summary = export_pretrained(pretrained, output, cfg, block=block, size=size,
                                        line_view=not no_line_view, framing=framing or "content", progress=not quiet, log=err)
        else:
            summary = export_run(run, output, cfg, progress=not quiet, log=err)
    for line in summary.lines():
        out.print(line, markup=False)
    if not summary.parity.passed():
        err.print("warning: int8 parity below target (mean cos >= 0.995, top-10 overlap >= 0.9)", markup=False)
