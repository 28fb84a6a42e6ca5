"""`uemctl bench` — encoder, end-to-end query and footprint measurements of a bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .inputs import BUNDLE_HELP, chosen_bundle, printable
from .root import app, err, out


@app.command("bench")
def bench(
    bundle: Optional[Path] = typer.Argument(None, help=BUNDLE_HELP, show_default=False),
    quick: bool = typer.Option(False, "--quick", help="Few repetitions, no 100k-item copy: seconds, "
                                                      "indicative numbers only."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    run: Optional[Path] = typer.Option(None, "--run", help="Training run (encoder.pt + config.json) "
                                                           "for the torch eager column."),
    items: Optional[int] = typer.Option(None, "--items", min=0, help="Grow a temporary copy's largest "
                                        "domain to this many items for the footprint (default 100000; "
                                        "0 with --quick)."),
    save: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the JSON report here."),
    no_reference: bool = typer.Option(False, "--no-reference", help="Do not time the plain fp32 network "
                                      "(the query's yardstick; building it needs torch)."),
) -> None:
    """Measure the bundle's encoder (int8 vs fp32 vs torch), Engine.query stage by stage next to
    the plain fp32 network it started from, and the engine's open time and memory; judge them
    against the edge targets (int8 speed-up and parity, query latency against the encoder alone
    and the plain network, open time, memory and bytes per item)."""
    from ..perf.suite import run_bench
    from ..perf.table import render
    from ..engine.atomic import replace_atomic
    from ..engine.errors import UemError

    path = chosen_bundle(bundle)
    if run is not None and not (run / "encoder.pt").is_file():
        raise UemError(f"{run}: not a training run (no encoder.pt)")
    with err.status("benchmarking") as status:
        report = run_bench(path, quick=quick, run_dir=run, items=items, reference=not no_reference,
                           note=lambda m: status.update(m))
    text = json.dumps(report, indent=1)
    if save is not None:
        replace_atomic(save, text.encode())
        err.print(f"wrote {printable(save)}", markup=False)
    if as_json:
        out.print(text, markup=False)
    else:
        render(report, out)
