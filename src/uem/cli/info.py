"""`uemctl info` — what a bundle holds: domains, counts, model facts, parity, calibration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..engine.bundle import read_bundle
from ..engine.openset import OpenSetRule
from .inputs import BUNDLE_HELP, chosen_bundle, printable
from .root import app, out


def _flat(d: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in d.items())


@app.command("info")
def info(
    bundle: Optional[Path] = typer.Argument(None, help=BUNDLE_HELP, show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON."),
) -> None:
    """Verify a bundle (checksums included) and describe it."""
    info_ = read_bundle(chosen_bundle(bundle))
    s = info_.summary()
    if as_json:
        out.print(json.dumps(s, indent=1), markup=False)
        return
    m, h, p = s["model"], s["hnsw"], s["prototypes"]
    pre = m["preprocess"]
    lines = [
        f"bundle       {printable(s['path'])}  (format {s['format_version']}, generation "
        f"{s['generation']}, written {s['written_at']}; checksums verified)",
        f"domains      " + ", ".join(f"{n} ({c} items)" for n, c in s["domains"].items()),
        f"model        embedding dim {m['embed_dim']}, input {pre['size']}x{pre['size']} "
        f"{pre['resample']}, ONNX opset {m['opset']}, encoder {m['encoder']['size'] / 1e6:.2f} MB "
        f"(sha256 {m['encoder']['sha256'][:12]}), fp32 copy {'kept' if m['encoder_fp32'] else 'not kept'}",
        f"hnsw         space {h['space']}, dim {h['dim']}, M {h['M']}, ef_construction "
        f"{h['ef_construction']}, ef_search {h['ef_search']}",
        "served by    " + (f"Milvus at {printable(s['backend']['uri'])}, collections "
                           + ", ".join(f"{d} -> {c}" for d, c in s["backend"]["collections"].items())
                           if s.get("backend") else "hnswlib indexes in the bundle"),
        f"prototypes   {p['count']} ("
        + ", ".join(f"{d} {n}" for d, n in p["per_domain"].items()) + f"), {p['links']} cross-domain links",
    ]
    extra = dict(m["extra"])
    parity = extra.pop("parity", None)
    lines.append("parity       " + (_flat(parity) if isinstance(parity, dict) else "not recorded"))
    lines.append("open-set     " + OpenSetRule(info_.prototypes, s["calibration"]).describe())
    cal = {k: v for k, v in s["calibration"].items() if k not in ("rule", "contrast", "anchored")}
    lines.append("calibration  " + (json.dumps(cal, sort_keys=True) if cal else "none besides the open-set rule"))
    al = s.get("alignment") or {}
    if not info_.alignment.active:
        lines.append("alignment    none (raw cosine)")
    else:
        kind = {"whiten": f"per-domain mean + ZCA whitening (shrinkage {al.get('shrinkage')})",
                "mean": "per-domain mean", "none": "none"}.get(al.get("kind"), str(al.get("kind")))
        csls = al.get("csls") or {}
        lines.append(f"alignment    {kind}; maps: {', '.join(al.get('maps') or []) or 'none'}; "
                     + (f"CSLS k {csls['k']} over {csls['candidates']} candidates" if csls.get("k") else "cosine ranking"))
    extra.pop("alignment", None)
    for key, value in extra.items():
        lines.append(f"{key:<12} " + (_flat(value) if isinstance(value, dict) else json.dumps(value)))
    for line in lines:
        out.print(line, markup=False)
