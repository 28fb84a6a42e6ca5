"""`uemctl demo` — build emoji3, train, export, query (with a concept the target lacks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from .root import app, err, out


@app.command("demo")
def demo_cmd(
    data: Path = typer.Option(Path("data/emoji3"), "--data", help="Where the emoji3 set is (built if missing)."),
    workdir: Path = typer.Option(Path("demo"), "--workdir", help="Where the open-set copy, run, bundle and sheet go."),
    query_domain: str = typer.Option("twemoji", "--from", help="Domain of the example queries."),
    target: str = typer.Option("notomono", "--domain", help="Domain searched; keeps half of its subgroups."),
    seed: int = typer.Option(0, "--seed", help="Seed of the open-set split and the example choice."),
    epochs_idse: Optional[int] = typer.Option(None, "--epochs-idse", help="Also run UEM's stage 1 (IDSE) for this many epochs (default 0)."),
    epochs_cdsm: Optional[int] = typer.Option(None, "--epochs-cdsm", help="Also run UEM's stage 2 (CDSM) for this many epochs (default 0)."),
    epochs1: Optional[int] = typer.Option(None, "--epochs1", hidden=True),  # older names of the two above
    epochs2: Optional[int] = typer.Option(None, "--epochs2", hidden=True),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """The main job on the built-in emoji3 set, end to end; prints where everything went."""
    from ..demo import DemoConfig, run_demo
    from .train import older_name

    summary = run_demo(DemoConfig(data=data, workdir=workdir, query_domain=query_domain, target_domain=target,
                                  seed=seed,
                                  epochs_idse=older_name(epochs_idse, epochs1, "--epochs-idse", "--epochs1"),
                                  epochs_cdsm=older_name(epochs_cdsm, epochs2, "--epochs-cdsm", "--epochs2")),
                       console=err)
    if as_json:
        out.print(json.dumps(summary), markup=False)
