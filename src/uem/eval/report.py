"""Turn `evaluate` results into results.json + report.md + PNG plots (what `uemctl eval` writes).

matplotlib is imported inside the plotting functions (Agg backend), so `import uem.eval` stays
numpy-only; the retrieval sheets are drawn with PIL.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from .harness import wild_blocks
from .metrics import roc_curve

SHEET_THUMB = 96


def _fmt(x, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def floor_table(floor) -> dict[str, dict]:
    """{pair: {"top1_identity", "map"}} from a harness result or from such a mapping already."""
    if floor is None:
        return {}
    if isinstance(floor, Mapping) and "pairs" in floor and isinstance(floor["pairs"], list):
        return {p["pair"]: {"top1_identity": p.get("top1_identity"), "map": p.get("map")}
                for p in floor["pairs"]}
    return {str(k): dict(v) for k, v in dict(floor).items()}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_pair_bars(results: dict, path: Path, floor: dict | None = None) -> Path:
    """Top-1 identity and mAP@All per pair, the floor's bars alongside (hatched) when given."""
    plt = _plt()
    pairs = results["pairs"]
    names = [p["pair"] for p in pairs]
    floor = floor or {}
    x = np.arange(len(pairs))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.3 * len(pairs)) * 2, 4), squeeze=False)
    for ax, key, label in zip(axes[0], ["top1_identity", "map"], ["top-1 identity", "mAP@All"]):
        ours = [p[key] if p[key] is not None else 0.0 for p in pairs]
        width = 0.38 if floor else 0.7
        ax.bar(x - (width / 2 if floor else 0), ours, width, label="this model", color="#3b75af")
        if floor:
            ref = [floor.get(n, {}).get(key) or 0.0 for n in names]
            ax.bar(x + width / 2, ref, width, label="floor", color="#bbbbbb", hatch="//")
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(label)
        ax.legend(fontsize=8)
    fig.suptitle(f"protocol {results.get('protocol')}, seed {results.get('seed')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _open_pairs(results: dict) -> list[dict]:
    return [p for p in results["pairs"] if p.get("open_set") and p["open_set"].get("scores") is not None]


def plot_open_set(results: dict, hist_path: Path, roc_path: Path) -> list[Path]:
    """Rejection-score histograms (private vs shared queries) and ROC curves, one panel per pair."""
    plt = _plt()
    pairs = _open_pairs(results)
    if not pairs:
        return []
    n = len(pairs)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, p in zip(axes.flat, pairs):
        s = np.asarray(p["open_set"]["scores"], dtype=float)
        priv = np.asarray(p["open_set"]["private"], dtype=bool)
        bins = np.histogram_bin_edges(s, bins=30) if len(s) else 10
        ax.hist(s[~priv], bins=bins, alpha=0.6, label=f"shared ({(~priv).sum()})", color="#3b75af")
        ax.hist(s[priv], bins=bins, alpha=0.6, label=f"private ({priv.sum()})", color="#d9534f")
        ax.set_title(p["pair"], fontsize=9)
        ax.set_xlabel("rejection score (higher = private)", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(hist_path, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for p in pairs:
        s = np.asarray(p["open_set"]["scores"], dtype=float)
        priv = np.asarray(p["open_set"]["private"], dtype=bool)
        if priv.any() and (~priv).any():
            fpr, tpr, _ = roc_curve(s, priv)
            ax.plot(fpr, tpr, label=f"{p['pair']} (AUROC {_fmt(p['open_set'].get('auroc'))})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set_xlabel("shared queries rejected (FPR)")
    ax.set_ylabel("private queries rejected (TPR)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(roc_path, dpi=100)
    plt.close(fig)
    return [hist_path, roc_path]


def _thumb(path: Path, size: int):
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGBA")
            canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
            canvas.alpha_composite(im)
            im = canvas.convert("RGB")
            im.thumbnail((size, size))
    except (OSError, ValueError):
        im = Image.new("RGB", (size, size), (230, 230, 230))
    out = Image.new("RGB", (size, size), (255, 255, 255))
    out.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return out


def retrieval_sheet(pair: dict, root: Path, path: Path, thumb: int = SHEET_THUMB) -> Path | None:
    """Query (left) + its top-k hits per row; frame green = same category, red = other; * = same item."""
    from PIL import Image, ImageDraw

    examples = pair.get("examples") or []
    if not examples:
        return None
    k = max(len(e["hits"]) for e in examples)
    pad, label_h = 6, 26
    cell = thumb + 2 * pad
    w, h = cell * (k + 1) + pad, (cell + label_h) * len(examples) + label_h
    sheet = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 1), f"{pair['pair']}: query | top-{k} (green = same category, * = same item)",
              fill=(0, 0, 0))
    for row, e in enumerate(examples):
        y = label_h + row * (cell + label_h)
        q = Path(e["query"])
        sheet.paste(_thumb(q if q.is_absolute() else root / q, thumb), (pad, y + pad))
        verdict = "" if e.get("accepted") is None else ("accepted" if e["accepted"] else "REJECTED")
        status = ", ".join(s for s in ("private" if e.get("private") else "", verdict) if s)
        draw.text((pad, y + cell), e["category"][:17], fill=(0, 0, 0))
        draw.text((pad, y + cell + 12), status, fill=(200, 50, 50) if e.get("private") else (0, 0, 0))
        for col, hit in enumerate(e["hits"], start=1):
            x = col * cell
            hp = Path(hit["path"])
            sheet.paste(_thumb(hp if hp.is_absolute() else root / hp, thumb), (x + pad, y + pad))
            colour = (40, 160, 60) if hit["same_category"] else (200, 50, 50)
            draw.rectangle([x + 2, y + 2, x + cell - 3, y + cell - 3], outline=colour, width=3)
            star = "*" if hit["same_identity"] else ""
            draw.text((x + pad, y + cell), f"{star}{_fmt(hit['score'], 2)}", fill=(0, 0, 0))
    sheet.save(path)
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def wild_table(results: dict) -> list[str]:
    """Markdown lines: every pair's clean vs wild top-1, mAP and acceptance (empty without wild)."""
    wild = wild_blocks(results)
    if not wild:
        return []
    cols = [("clean", results["pairs"])] + [(v, b["pairs"]) for v, b in wild.items()]
    head = ["pair"] + [f"{name} {m}" for name, _ in cols for m in ("top-1", "mAP", "accept")]
    lines = ["## Wild queries", "",
             "The same queries re-framed as a user's pictures are (scale, position, aspect, rotation, "
             "blur, JPEG; `background`: on flat colours, gradients or photographs); the gallery as "
             "indexed. `accept`: share of queries whose category exists that the engine accepts.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def acc(p):
        o = p.get("open_set") or {}
        return _fmt(o.get("known_acceptance"))
    for i, p in enumerate(results["pairs"]):
        row = [p["pair"]]
        for _, ps in cols:
            row += [_fmt(ps[i]["top1_identity"]), _fmt(ps[i]["map"]), acc(ps[i])]
        lines.append("| " + " | ".join(row) + " |")
    means = ["mean"]
    for name, ps in cols:
        s = results["summary"] if name == "clean" else wild[name]["summary"]
        means += [_fmt(s.get("mean_top1_identity")), _fmt(s.get("mean_map")),
                  _fmt(s.get("mean_known_acceptance"))]
    lines += ["| " + " | ".join(means) + " |", ""]
    return lines


def markdown(results: dict, floor: dict | None = None, images: dict | None = None,
             title: str = "uem evaluation", command: str | None = None) -> str:
    """The short Markdown report: settings, the per-pair table (vs the floor), open-set table, plots."""
    floor = floor or {}
    images = images or {}
    ks = results.get("k", [])
    lines = [f"# {title}", ""]
    if command:
        lines += ["```", command, "```", ""]
    lines += [f"Data: `{results.get('data_dir')}` · protocol **{results.get('protocol')}** · "
              f"seed {results.get('seed')} · labels: {results.get('labels')} · "
              f"embedding dim {results.get('embedding_dim')} · cosine", ""]
    head = ["pair", "queries", "retrieval", "top-1 identity", "mAP@All", "class-bal. mAP"]
    head += [f"P@{k}" for k in ks]
    if floor:
        head += ["floor top-1", "Δ top-1", "floor mAP", "Δ mAP"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in results["pairs"]:
        row = [p["pair"], str(p["n_queries"]), str(p["n_retrieval"]), _fmt(p["top1_identity"]),
               _fmt(p["map"]), _fmt(p["map_class_balanced"])]
        row += [_fmt(p["p_at_k"].get(str(k))) for k in ks]
        if floor:
            f = floor.get(p["pair"], {})
            for key in ("top1_identity", "map"):
                ref = f.get(key)
                diff = None if ref is None or p[key] is None else p[key] - ref
                row += [_fmt(ref), "–" if diff is None else f"{diff:+.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    s = results.get("summary", {})
    lines += ["", f"Mean over pairs: top-1 identity {_fmt(s.get('mean_top1_identity'))}, "
              f"mAP@All {_fmt(s.get('mean_map'))}, class-balanced mAP {_fmt(s.get('mean_map_class_balanced'))}.",
              "", "top-1 identity: over queries whose item exists in the target; mAP@All: over queries "
              "whose category exists in the target (`n_identity` / `n_scored` in results.json).", ""]
    lines += wild_table(results)
    os_rows = [p for p in results["pairs"] if p.get("open_set")]
    if os_rows:
        lines += ["## Open set", "",
                  "| pair | private queries | shared queries | private detection | known acceptance | "
                  "H-score | AUROC | shared mAP |", "|---|---|---|---|---|---|---|---|"]
        for p in os_rows:
            o = p["open_set"]
            lines.append(f"| {p['pair']} | {o['n_private']} | {o['n_shared']} | {_fmt(o['private_detection'])} | "
                         f"{_fmt(o['known_acceptance'])} | {_fmt(o['h_score'])} | {_fmt(o['auroc'])} | "
                         f"{_fmt(p['map'])} |")
        lines.append("")
    elif results.get("protocol") == "open":
        lines += ["Open-set numbers need a rejection rule (none was given).", ""]
    if images:
        lines += ["## Plots", ""]
        for name, rel in images.items():
            lines.append(f"![{name}]({rel})")
        lines.append("")
    return "\n".join(lines)


def write_report(results: dict, out_dir: str | Path, floor=None, title: str = "uem evaluation",
                 command: str | None = None, sheets: bool = True) -> dict[str, Path]:
    """Write results.json, report.md, bars.png, open-set plots and retrieval sheets into `out_dir`.

    `floor`: a harness result (e.g. benchmarks/results/floor.json) or {pair: {top1_identity, map}}
    to show alongside. Returns {name: path} of everything written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ftable = floor_table(floor)
    written: dict[str, Path] = {}
    written["results.json"] = out / "results.json"
    written["results.json"].write_text(json.dumps(_jsonable(results), indent=1, allow_nan=False) + "\n")
    images: dict[str, str] = {}
    written["bars.png"] = plot_pair_bars(results, out / "bars.png", ftable)
    images["per-pair top-1 and mAP"] = "bars.png"
    for p in plot_open_set(results, out / "openset_hist.png", out / "openset_roc.png"):
        written[p.name] = p
        images["open-set rejection scores" if "hist" in p.name else "open-set ROC"] = p.name
    if sheets:
        root = Path(results.get("data_dir", "."))
        (out / "sheets").mkdir(exist_ok=True)
        views = [("", results["pairs"])] + [(variant, block["pairs"]) for variant, block in wild_blocks(results).items()]
        for variant, pairs in views:
            for p in pairs:
                name = f"sheets/{variant + '_' if variant else ''}{p['query']}_to_{p['target']}.png"
                if retrieval_sheet(p, root, out / name):
                    written[name] = out / name
                    images[f"retrieval {p['pair']}" + (f" ({variant} queries)" if variant else "")] = name
    written["report.md"] = out / "report.md"
    written["report.md"].write_text(markdown(results, ftable, images, title, command) + "\n")
    return written
