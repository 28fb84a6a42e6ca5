"""`uemctl eval` — score a bundle on labelled data (close / partial / open-set protocols)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..engine.errors import UemError
from .root import app, err, out


def _f(v) -> str:
    return "   n/a" if v is None else f"{v:6.3f}"


@app.command("eval")
def eval_cmd(
    bundle: Path = typer.Argument(..., help="An exported bundle (uemctl export)."),
    data: Path = typer.Argument(..., help="DATA/<domain>/<category>/...: categories come from the first sub-folder."),
    protocol: str = typer.Option("close", "--protocol", help="close | partial | open"),
    pairs: Optional[list[str]] = typer.Option(None, "--pair", help="query->target (repeatable); default: every ordered pair."),
    seed: int = typer.Option(0, "--seed", help="Seed of the category split."),
    report: Optional[Path] = typer.Option(None, "--out", "-o", help="Write results.json, report.md and PNG plots here."),
    floor: Optional[Path] = typer.Option(None, "--floor", help="A floor results JSON to show alongside (benchmarks/results/floor.json)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV path,category instead of folder names."),
    as_json: bool = typer.Option(False, "--json", help="Print the full results as JSON."),
    queries: str = typer.Option("clean", "--queries", help="clean: the pictures as indexed; wild: also "
                                "re-framed copies (moved, scaled, rotated, JPEG; on white and on backgrounds)."),
) -> None:
    """Evaluate retrieval (top-1 identity, mAP@All) and open-set rejection (detection, acceptance, H, AUROC)."""
    from ..eval.bundle_eval import evaluate_bundle
    from ..eval.harness import QUERIES, wild_blocks
    from ..eval.protocols import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise UemError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    if queries not in QUERIES:
        raise UemError(f"--queries must be one of {', '.join(QUERIES)}, not {queries!r}")
    if queries == "wild":
        from ..eval.wild import check_available

        check_available()  # before the bundle is even opened
    try:
        res = evaluate_bundle(bundle, data, protocol=protocol, pairs=pairs, seed=seed, out=report,
                              floor=floor, labels_csv=labels, command="uemctl " + " ".join(sys.argv[1:]),
                              log=lambda m: err.print(m, markup=False), queries=queries)
    except ValueError as e:  # a malformed --pair
        raise UemError(str(e)) from None
    if as_json:
        out.print(json.dumps({k: v for k, v in res.items()}, default=str), markup=False)
        return
    out.print(f"{'pair':<24} {'top-1':>6} {'mAP':>6} {'mAP-cb':>6} {'detect':>7} {'accept':>7} {'H':>6} {'AUROC':>6}",
              markup=False)
    rows = [(p["pair"], p) for p in res["pairs"]]
    for variant, block in wild_blocks(res).items():
        rows += [(f"{p['pair']} ({variant})", p) for p in block["pairs"]]
    for label, p in rows:
        o = p.get("open_set") or {}
        out.print(f"{label:<24} {_f(p['top1_identity'])} {_f(p['map'])} {_f(p['map_class_balanced'])} "
                  f"{_f(o.get('private_detection')):>7} {_f(o.get('known_acceptance')):>7} {_f(o.get('h_score'))} "
                  f"{_f(o.get('auroc'))}", markup=False)
    if report:
        err.print(f"report: {report / 'report.md'}", markup=False)
