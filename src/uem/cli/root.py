"""The typer apps every command module registers on (kept apart from app.py to avoid import cycles)."""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    name="uemctl",
    help="Universal unsupervised cross-domain image retrieval: train, export, query.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Build benchmark data sets.", no_args_is_help=True)
index_app = typer.Typer(help="Change a bundle's per-domain indexes.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(index_app, name="index")

# Results go to stdout; progress, notes and errors to stderr so `--json` output stays clean.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
