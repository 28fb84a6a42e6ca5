"""`uemctl demo` — the whole product on the built-in emoji3 set, end to end, in one command.

1. build emoji3 (Twemoji, OpenMoji, Noto Emoji line art) unless it is there;
2. make an OPEN-SET copy of it: the target domain keeps a seeded random half of its subgroups, so
   some concepts exist among the queries but not in the target — the case uem must answer "no match";
3. train the default model on that copy (no labels), export the int8 bundle;
4. run example queries (concepts the target has, and concepts it lacks, and two of the first ones
   as a user's pictures would be: moved and scaled on white, and on a background), print the
   answers, draw a contact sheet; evaluate the open-set pair with the numbers that matter (mAP,
   detection, acceptance), for the pictures as indexed and for wild copies of them.

Sub-folders are read as labels only here, to choose and judge examples — never by training.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from rich.console import Console

from .engine.atomic import new_folder
from .engine.errors import DataError


@dataclass
class DemoConfig:
    data: Path = Path("data/emoji3")
    workdir: Path = Path("demo")
    query_domain: str = "twemoji"
    target_domain: str = "notomono"
    seed: int = 0
    examples_shared: int = 4
    examples_private: int = 4
    examples_wild: int = 2      # shared examples asked again as wild copies (eval/wild.py), one per variant
    k: int = 5
    epochs_idse: int | None = None  # None: the trainer's defaults
    epochs_cdsm: int | None = None


def make_open_set_copy(data: Path, out: Path, target: str, seed: int) -> dict:
    """Symlink DATA into `out`, keeping only a seeded half of `target`'s subgroups (per-file links).

    Returns the split (kept / dropped subgroups), also stored as `out/split.json`: an existing copy of
    the same split is reused, a copy of another split is rebuilt.
    """
    import json
    import shutil

    from .eval.protocols import random_half

    data, out = data.resolve(), Path(out)
    domains = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    if target not in domains:
        raise DataError(f"{data}: no domain {target!r} (found {', '.join(domains)})")
    subgroups = sorted(p.name for p in (data / target).iterdir() if p.is_dir())
    kept = set(random_half(subgroups, seed))
    split = {"source": str(data), "target": target, "seed": seed, "kept": sorted(kept),
             "dropped": sorted(set(subgroups) - kept), "path": str(out)}
    record = out / "split.json"
    if out.exists():
        if record.is_file() and json.loads(record.read_text(encoding="utf-8")) == split:
            return split
        shutil.rmtree(out)  # a copy of another split (or an interrupted one): rebuild
    with new_folder(out) as tmp:
        for domain in domains:
            for src in sorted((data / domain).rglob("*.png")):
                rel = src.relative_to(data / domain)
                if domain == target and rel.parts[0] not in kept:
                    continue
                dst = tmp / domain / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src, dst)
        (tmp / "split.json").write_text(json.dumps(split), encoding="utf-8")
    return split


def pick_examples(data: Path, domain: str, subgroups: list[str], n: int, seed: int) -> list[Path]:
    """One image from each of n seeded-random subgroups of `domain` (first file of the subgroup)."""
    rng = np.random.default_rng(seed)
    chosen = [subgroups[i] for i in sorted(rng.permutation(len(subgroups))[:n])]
    out = []
    for sg in chosen:
        files = sorted((data / domain / sg).glob("*.png"))
        if files:
            out.append(files[int(rng.integers(len(files)))])
    return out


def wild_examples(pictures: list[Path], data: Path, out: Path, seed: int) -> list[tuple[Path, Path]]:
    """[(wild copy, original)]: the i-th picture re-framed with the i-th wild variant (on white, then
    on a background), as a user's screenshot or photo of it would be."""
    from .eval.wild import VARIANTS, write_wild_copies

    return [(write_wild_copies([p], data, out, VARIANTS[i % len(VARIANTS)], seed)[0], p)
            for i, p in enumerate(pictures)]


def _variant(wild_copy: Path) -> str:
    """'moved and scaled' / 'on a background' from a wild copy's path (.../<variant>/<domain>/...)."""
    from .eval.wild import VARIANTS

    variant = next((part for part in wild_copy.parts if part in VARIANTS), "")
    return {"reframed": "wild: moved and scaled", "background": "wild: on a background"}.get(variant, "wild")


def run_demo(cfg: DemoConfig, console: Console | None = None) -> dict:
    from .datasets.emoji import build_emoji3
    from .engine import Engine
    from .engine.sheet import SheetRow, write_sheet
    from .eval.engine_scores import pair_scores, reject_fn
    from .eval.harness import evaluate
    from .eval.wild import VARIANTS as WILD_VARIANTS
    from .export.config import ExportConfig
    from .export.pipeline import export_run
    from .train.config import TrainConfig
    from .train.trainer import train

    console = console or Console(stderr=True, highlight=False)
    t0 = time.perf_counter()
    work = Path(cfg.workdir)
    work.mkdir(parents=True, exist_ok=True)

    console.rule("1. data")
    if not (Path(cfg.data) / "emoji3.json").is_file():
        build_emoji3(Path(cfg.data))
    console.print(f"emoji3 set: {cfg.data}")

    split = make_open_set_copy(Path(cfg.data), work / "data", cfg.target_domain, cfg.seed)
    console.print(f"open-set copy: {split['path']} — {cfg.target_domain} keeps {len(split['kept'])} "
                  f"subgroups, lacks {len(split['dropped'])} (e.g. {', '.join(split['dropped'][:3])})")

    console.rule("2. train (unsupervised)")
    run_dir = work / "run"
    if (run_dir / "encoder.pt").is_file():
        console.print(f"reusing the trained run in {run_dir} (delete it to train again)")
    else:
        epochs = {k: v for k, v in (("epochs_idse", cfg.epochs_idse), ("epochs_cdsm", cfg.epochs_cdsm)) if v is not None}
        train(TrainConfig(data=str((work / "data").resolve()), seed=2024, **epochs), run_dir, console=console)
    t_train = time.perf_counter()

    console.rule("3. export (int8 ONNX + HNSW + prototypes)")
    bundle = work / "model.uem"
    export_run(run_dir, bundle, ExportConfig(overwrite=True), log=console)
    t_export = time.perf_counter()

    console.rule("4. queries")
    eng = Engine.open(bundle)
    shared = pick_examples(Path(cfg.data), cfg.query_domain, split["kept"], cfg.examples_shared, cfg.seed)
    queries = shared + pick_examples(Path(cfg.data), cfg.query_domain, split["dropped"], cfg.examples_private,
                                     cfg.seed)
    wild = wild_examples(shared[:cfg.examples_wild], Path(cfg.data), work / "wild", cfg.seed)
    rows, lines = [], []
    for q in queries + [w for w, _ in wild]:
        original = dict(wild).get(q, q)
        sg = original.parent.name
        exists = sg in split["kept"]
        name = f"{sg}/{original.stem}" + ("" if original == q else f" ({_variant(q)})")
        r = eng.query(q, domain=cfg.target_domain, k=cfg.k, source=cfg.query_domain, no_reject=True)
        right = (r.accepted == exists)
        verdict = "match" if r.accepted else f"no match ({r.reason})"
        truth = "exists in target" if exists else "NOT in target"
        hits = ", ".join(f"{Path(h.path).parent.name}/{Path(h.path).stem} {h.score:.2f}" for h in r.hits[:3])
        lines.append(f"{'✓' if right else '✗'} {name} [{truth}] -> {verdict}; top hits: {hits}")
        rows.append(SheetRow(query=q, label=name, result=r))
    for line in lines:
        console.print(line, markup=False)
    sheet = write_sheet(rows, work / "queries.png", k=cfg.k)

    console.rule(f"5. open-set evaluation {cfg.query_domain} -> {cfg.target_domain}")
    res = evaluate(lambda paths: eng.embed(paths), work / "data",
                   pairs=[(cfg.query_domain, cfg.target_domain)], protocol="close",
                   reject_fn=reject_fn(eng), n_examples=0, keep_scores=False,
                   score_fn=partial(pair_scores, eng), queries="wild", wild_dir=work / "wild")
    p = res["pairs"][0]
    o = p.get("open_set") or {}
    wild_rows = {v: res["wild"][v]["pairs"][0] for v in WILD_VARIANTS}
    summary = {
        "bundle": str(bundle), "run": str(run_dir), "sheet": str(sheet), "data": split["path"],
        "pair": p["pair"], "top1_identity": p["top1_identity"], "map": p["map"],
        "private_detection": o.get("private_detection"), "known_acceptance": o.get("known_acceptance"),
        "h_score": o.get("h_score"), "auroc": o.get("auroc"),
        "wild": {v: {"top1_identity": w["top1_identity"], "map": w["map"],
                     "known_acceptance": (w.get("open_set") or {}).get("known_acceptance"),
                     "private_detection": (w.get("open_set") or {}).get("private_detection")}
                 for v, w in wild_rows.items()},
        "seconds": {"train": round(t_train - t0, 1), "export": round(t_export - t_train, 1),
                    "total": round(time.perf_counter() - t0, 1)},
    }
    for key in ("top1_identity", "map", "private_detection", "known_acceptance", "h_score", "auroc"):
        v = summary[key]
        console.print(f"{key:>18}: {'n/a' if v is None else f'{v:.3f}'}", markup=False)
    for v, w in summary["wild"].items():
        console.print(f"{'wild (' + v + ')':>18}: " + ", ".join(
            f"{k} {'n/a' if x is None else f'{x:.3f}'}" for k, x in w.items()), markup=False)
    console.rule("where everything went")
    for key in ("data", "run", "bundle", "sheet"):
        console.print(f"{key:>7}: {summary[key]}", markup=False)
    console.print(f"try:  uemctl query {queries[-1]} --domain {cfg.target_domain} --bundle {bundle}",
                  markup=False)
    console.print(f"total time {summary['seconds']['total']:.0f} s", markup=False)
    return summary
