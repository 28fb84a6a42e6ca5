#!/usr/bin/env python
"""Clean AND wild queries, per configuration, through the exported int8 bundle.

    .venv/bin/python benchmarks/wild_queries.py --data data/emoji3 --config default \\
        --config pretrained --seeds 0 1 2 --out benchmarks/results/wild_emoji3.json

Each configuration is trained (`uemctl train`, unless it is a `--pretrained` one), exported
(`uemctl export`) and evaluated (`uemctl eval --queries wild`, every ordered pair, close-set)
through the bundle, so the numbers are what a user of that bundle gets. Per run it records: every
pair's top-1 identity, mAP@All and "no match" acceptance for the clean queries and both wild
variants (uem.eval.wild), the wall time and peak memory of training and export, and the seed.
Re-running skips runs already in the output JSON (same config, data and seed); `--redo` exports
and evaluates them again with the current code, reusing a kept training run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from uem.engine.atomic import replace_atomic
from uem.eval.harness import wild_blocks

ROOT = Path(__file__).resolve().parent.parent
UEMCTL = str(ROOT / ".venv" / "bin" / "uemctl")

# the floor (uem.train.floor: untrained Lite0, pooled 1280-d, 224 px, cosine), scored by the
# harness directly (no bundle, so no "no match" decision): name -> framing
FLOORS = {"floor": "letterbox", "floor-content": "content"}

# name -> (train arguments, or None for an untrained bundle; export arguments)
CONFIGS: dict[str, tuple[list[str] | None, list[str]]] = {
    "default": ([], []),
    "no-placement": (["--place-p", "0"], []),
    "letterbox": (["--framing", "letterbox", "--place-p", "0"], []),
    "pretrained": (None, []),
    "pretrained-letterbox": (None, ["--framing", "letterbox"]),
    "place-photos": (["--place-photos"], []),
    "pretrained-probes": (None, ["--probes", "256"]),
    "pretrained-b15": (None, ["--block", "15"]),
    "pretrained-224": (None, ["--size", "224"]),
}
# export-only variants of a trained configuration: name -> (the configuration whose run is
# re-exported, export arguments); runs are kept under --work for this
VARIANTS = {
    "default/no-probes": ("default", ["--probes", "0"]),
    "default/probes-256": ("default", ["--probes", "256"]),
    "default/align-mean": ("default", ["--align", "mean"]),
    "default/dim-full": ("default", ["--dim", "0"]),   # the model's 512-d (the default before 256)
    "default/dim-256": ("default", ["--dim", "256"]),
    "default/dim-128": ("default", ["--dim", "128"]),
}


def run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run cmd (output to log); (wall seconds, peak RSS in GB). Raises on failure."""
    t0 = time.perf_counter()
    with open(log, "ab") as f:
        f.write(("$ " + shlex.join(cmd) + "\n").encode())
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=f, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}; see {log}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024 ** 2


def summarise(results: dict) -> dict:
    def pairs(ps):
        return {p["pair"]: {"top1_identity": p["top1_identity"], "p_at_1": p["p_at_k"].get("1"), "map": p["map"],
                            "acceptance": (p.get("open_set") or {}).get("known_acceptance")} for p in ps}
    out = {"clean": pairs(results["pairs"])}
    for variant, block in wild_blocks(results).items():
        out[variant] = pairs(block["pairs"])
    return out


def floor(data: Path, framing: str, wild_dir: Path) -> tuple[float, dict]:
    """(seconds, harness results) of the untrained floor embedding with wild queries."""
    from uem.eval.harness import evaluate
    from uem.train.floor import floor_embed_fn

    t0 = time.perf_counter()
    res = evaluate(floor_embed_fn(framing=framing, progress=False), data, queries="wild", wild_dir=wild_dir)
    return time.perf_counter() - t0, res


def finish(row: dict, results: dict, done: dict, out: Path) -> None:
    """Record one run's numbers (and save the whole JSON, so an interrupted grid keeps them)."""
    row["pairs"] = summarise(results)
    row["summary"] = {"clean": results["summary"],
                      **{v: b["summary"] for v, b in wild_blocks(results).items()}}
    done["rows"].append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_atomic(out, (json.dumps(done, indent=1) + "\n").encode())  # hours of runs: never half a file
    s = row["summary"]

    def f(x):
        return "n/a" if x is None else f"{x:.3f}"
    print(f"{Path(row['data']).name} {row['config']} seed {row['seed']}: " + "; ".join(
        f"{v}: top-1 {f(s[v].get('mean_top1_identity'))} mAP {f(s[v].get('mean_map'))}"
        for v in ("clean", "reframed", "background")), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS) + sorted(FLOORS) + sorted(VARIANTS),
                    required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "wild_queries")
    ap.add_argument("--redo", action="store_true", help="measure recorded runs again (export + eval; a kept "
                    "run is not retrained)")
    args = ap.parse_args()
    done = json.loads(args.out.read_text()) if args.out.is_file() else {"rows": []}
    data = args.data.resolve()
    for config in args.config:
        base = VARIANTS[config][0] if config in VARIANTS else None
        train_args, export_args = (CONFIGS[base][0], VARIANTS[config][1]) if base else CONFIGS.get(config, (None, []))
        for seed in (args.seeds if train_args is not None else [0]):
            same = [r for r in done["rows"] if r["config"] == config and r["seed"] == seed and r["data"] == str(data)]
            if same and not args.redo:
                continue
            for r in same:  # --redo: measured again with the code as it is now (a kept run is not retrained)
                done["rows"].remove(r)
            if same:
                import shutil
                shutil.rmtree(args.work / data.name / f"{config.replace('/', '+')}-s{seed}" / "eval",
                              ignore_errors=True)
            work = args.work / data.name / f"{config.replace('/', '+')}-s{seed}"
            work.mkdir(parents=True, exist_ok=True)
            log = work / "log.txt"
            row = {"config": config, "seed": seed, "data": str(data), "train_args": train_args,
                   "export_args": export_args}
            bundle = work / "model.uem"
            if config in FLOORS:
                row["eval_s"], results = floor(data, FLOORS[config], work / "wild")
                finish(row, results, done, args.out)
                continue
            if base:
                runs = args.work / data.name / f"{base}-s{seed}" / "run"
                if not runs.is_dir():
                    runs = args.work / data.name / f"{base}-s{seed}.run-kept"
                row["export_s"], row["export_rss_gb"] = run(
                    [UEMCTL, "export", str(runs), "-o", str(bundle), "-q", *export_args], log)
            elif train_args is None:
                row["export_s"], row["export_rss_gb"] = run(
                    [UEMCTL, "export", "--pretrained", str(data), "-o", str(bundle), "-q", *export_args], log)
            else:
                runs = work / "run"
                if not (runs / "encoder.pt").is_file() and (work.parent / f"{work.name}.run-kept").is_dir():
                    runs = work.parent / f"{work.name}.run-kept"
                if (runs / "encoder.pt").is_file() and same:   # --redo of a kept run: its training as measured
                    row["train_s"], row["train_rss_gb"] = same[0].get("train_s"), same[0].get("train_rss_gb")
                else:
                    row["train_s"], row["train_rss_gb"] = run(
                        [UEMCTL, "train", str(data), "-o", str(runs), "-q", "--seed", str(seed), *train_args], log)
                row["export_s"], row["export_rss_gb"] = run(
                    [UEMCTL, "export", str(runs), "-o", str(bundle), "-q", *export_args], log)
            eval_dir = work / "eval"
            row["eval_s"], _ = run([UEMCTL, "eval", str(bundle), str(data), "--queries", "wild",
                                    "-o", str(eval_dir)], log)
            finish(row, json.loads((eval_dir / "results.json").read_text()), done, args.out)


if __name__ == "__main__":
    sys.exit(main())
