"""Long reliability trials: the same checks as tests/test_reliability_*.py, with counts.

    .venv/bin/python benchmarks/reliability.py --fuzz 20000 --kill-trials 20 --queries 10000 \
        --stream-files 10000 --manifest-fuzz 3000 --seed 1

Prints one Markdown table (category, cases tried, failures, seed, what ran) and writes it, with the
failure details, to benchmarks/results/reliability.json. Any failure makes the exit code 1.
`--only fuzz,tamper,...` runs a subset. Machine: see `uptime` in the output (a shared 2-core VM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from uem.testing import reliability as rk
from uem.testing.bundles import draw, make_bundle, write_images

ROOT = Path(__file__).resolve().parents[1]

CATEGORIES = ("fuzz", "tamper", "manifest", "kill-add", "kill-rewrite", "kill-export", "concurrency",
              "two-process", "stream", "names")


def fuzz(work: Path, bundle: Path, n: int, seed: int) -> dict:
    bombs = [rk.Case("zlib-bomb-10000.png", rk.zlib_bomb_png(10000), "error", "too large"),  # 316 KB
             rk.Case("zlib-bomb-6000.png", rk.zlib_bomb_png(6000), "error", "too large"),  # 36 MP
             rk.Case("zlib-bomb-4800.png", rk.zlib_bomb_png(4800), "answer")]  # 23 MP: just under the limit
    cases = rk.write_cases(work / "files", rk.named_corpus() + bombs + rk.mutated_corpus(n, seed))
    rep = rk.fuzz_engine(bundle, work / "files", cases, timeout=3600)
    seen, cli_fails = rk.fuzz_cli(bundle, work / "files", rep.records, timeout=3600)
    slowest = max(rep.records, key=lambda r: r["seconds"], default={"seconds": 0.0, "name": "-"})
    return {"cases": len(cases), "failures": rep.failures + cli_fails,
            "detail": f"{len(cases) - n} named + {n} mutants; engine: {rep.count('answer')} answered, "
                      f"{rep.count('typed')} typed errors, slowest file {slowest['seconds']:.2f} s "
                      f"({slowest['name']}, limit {rk.HANG_LIMIT_S} s); CLI saw {seen}"}


def tamper(work: Path, bundle: Path, flips: int, seed: int) -> dict:
    n, failures = rk.run_tamper_matrix(bundle, work, seed, flips)
    return {"cases": n, "failures": failures, "detail": f"{flips} random flips per file + fixed cases"}


def manifest(work: Path, bundle: Path, n: int, seed: int) -> dict:
    tried, outcomes, failures = rk.manifest_fuzz(bundle, work, n, seed)
    return {"cases": tried, "failures": failures, "detail": f"outcomes {outcomes}"}


def kill_add(work: Path, bundle: Path, trials: int, seed: int) -> dict:
    write_images(work / "new", {"sketch": ["red", "blue"]}, n_per=40, seed=seed)
    done, failures = rk.writer_kill_trials(
        bundle, lambda b: rk.cli("index", "add", str(b), str(work / "new" / "sketch"), "--domain", "sketch"),
        work / "trials", trials, seed)
    return {"cases": len(done), "failures": failures,
            "detail": f"outcomes {dict(Counter(t.outcome for t in done))}, "
                      f"phases {dict(Counter(t.phase for t in done))}"}


def kill_rewrite(work: Path, bundle: Path, trials: int, seed: int) -> dict:
    outcomes, failures = rk.rewrite_kill_trials(bundle, work / "model.uem", trials, seed)
    return {"cases": len(outcomes), "failures": failures, "detail": f"states {dict(Counter(outcomes))}"}


def kill_export(work: Path, bundle: Path, trials: int, seed: int) -> dict:
    run = rk.make_tiny_run(work / "run")
    from uem.export import scratch

    done, failures = rk.writer_kill_trials(
        bundle, lambda b: rk.cli("export", str(run), "-o", str(b), "--calib", "8", "-q"),
        work / "trials", trials, seed, compare_vectors=False)
    tmp = Path(tempfile.gettempdir())
    killed = [p for p in tmp.glob(scratch.PREFIX + "*") if not scratch._alive(int(p.name.split("-")[2]))]
    proc = subprocess.run(rk.cli("export", str(run), "-o", str(work / "after.uem"), "--calib", "8", "-q"),
                          capture_output=True, text=True)
    left = [p for p in killed if p.exists()]
    if proc.returncode != 0 or left:
        failures.append(f"export after the trials: rc {proc.returncode}, scratch left {left}")
    return {"cases": len(done), "failures": failures,
            "detail": f"outcomes {dict(Counter(t.outcome for t in done))}, "
                      f"phases {dict(Counter(t.phase for t in done))}; {len(killed)} killed exports' "
                      f"scratch folders, {len(left)} left after the next export"}


def concurrency(work: Path, bundle: Path, queries: int, seed: int) -> dict:
    b = work / "model.uem"
    shutil.copytree(bundle, b)
    rep = rk.hammer(b, queries=queries, threads=8, adds=50, per_add=2, seed=seed)
    return {"cases": rep.queries, "failures": rep.errors,
            "detail": f"8 threads, {rep.adds} adds of 2 images, {rep.states} distinct states seen"}


def two_process(work: Path, bundle: Path, rounds: int, seed: int) -> dict:
    from uem.engine.bundle import read_bundle

    failures, tried = [], 0
    for r in range(rounds):
        b = work / f"r{r}" / "model.uem"
        shutil.copytree(bundle, b)
        dirs = []
        for i in range(2):
            write_images(work / f"r{r}" / f"in{i}", {"sketch": ["red", "blue"][i:i + 1]}, n_per=10, seed=seed + 10 * r + i)
            dirs.append(work / f"r{r}" / f"in{i}" / "sketch")
        procs = [subprocess.Popen(rk.cli("index", "add", str(b), str(d), "--domain", "sketch"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for d in dirs]
        outs = [p.communicate() for p in procs]
        tried += 2
        count = read_bundle(b).domains["sketch"].count
        if [p.returncode for p in procs] != [0, 0] or count != 12 + 20:
            failures.append(f"round {r}: rc {[p.returncode for p in procs]}, count {count}: {outs}")
    return {"cases": tried, "failures": failures, "detail": f"{rounds} rounds of two concurrent `uemctl index add`"}


# VmHWM, not getrusage: ru_maxrss survives exec, so a child of a big parent reports the parent's size.
_RSS_CHILD = r"""
import sys
from uem.cli.app import main
sys.stdout = open(sys.argv[1], "w")
code = main(sys.argv[2:])
sys.stdout.close()
from uem.perf.measure import proc_status_mb
print(code, proc_status_mb("VmHWM"), file=sys.stderr)
"""


def stream(work: Path, bundle: Path, n: int, seed: int) -> dict:
    """Peak RSS of `uemctl query DIR --json` over n files vs n/10 files: bounded means flat."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pool = []
    for i in range(16):
        p = work / f"pool{i}.png"
        draw(["red", "blue"][i % 2], "photo", rng).save(p)
        pool.append(p.read_bytes())
    results, failures = {}, []
    for count in (n // 10, n):
        d = work / f"q{count}"
        for i in range(count):
            sub = d / f"{i // 1000:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"{i:06d}.png").write_bytes(pool[i % len(pool)])
        proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(work / f"out{count}.json"), "query", str(d),
                               "--domain", "sketch", "--json", "--bundle", str(bundle), "--threads", "1"],
                              capture_output=True, text=True)
        code, rss_mb = proc.stderr.split()[-2:]
        doc = json.loads((work / f"out{count}.json").read_text())
        if int(code) != 0 or len(doc["results"]) != count:
            failures.append(f"{count} files: exit {code}, {len(doc['results'])} results")
        results[count] = float(rss_mb)
        shutil.rmtree(d)
    small, big = results[n // 10], results[n]
    growth = big - small
    if growth > 64:  # a 10x longer stream must not cost memory in proportion
        failures.append(f"peak RSS grew {growth:.0f} MiB from {n // 10} to {n} files")
    return {"cases": n + n // 10, "failures": failures,
            "detail": f"peak RSS {small:.0f} MiB at {n // 10} files, {big:.0f} MiB at {n} files "
                      f"(growth {growth:+.0f} MiB, limit 64)"}


def names(work: Path, bundle: Path, _n: int, seed: int) -> dict:
    """Long paths (near PATH_MAX, 255-byte components, one beyond PATH_MAX), non-UTF-8 and
    control-character names through `uemctl query` (text and JSON) and `uemctl index add`."""
    import numpy as np

    png = work / "src.png"
    draw("red", "photo", np.random.default_rng(seed)).save(png)
    data = png.read_bytes()
    failures, tried = [], 0
    good = [work / os.fsdecode(b"caf\xe9-\xff.png"), work / "new\nline.png", work / "esc\x1b[31m.png"]
    deep = work
    while len(str(deep)) + 256 < 4000:
        deep = deep / ("d" * 250)
    deep.mkdir(parents=True)
    good.append(deep / ("f" * 250 + ".png"))
    for p in good:
        p.write_bytes(data)
    # a file whose full path exceeds PATH_MAX (created relative to a directory descriptor)
    fd = os.open(deep, os.O_RDONLY)
    os.mkdir("x" * 200, dir_fd=fd)
    os.close(fd)
    fd = os.open(deep / ("x" * 200), os.O_RDONLY)
    with open(os.open("y" * 200 + ".png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
        f.write(data)
    os.close(fd)
    too_long = Path(str(deep / ("x" * 200) / ("y" * 200 + ".png")))
    for args in ([*good, "--json"], [*good]):
        tried += len(good)
        proc = subprocess.run(rk.cli("query", *map(str, args), "--domain", "sketch", "--bundle", str(bundle)),
                              capture_output=True)
        if proc.returncode != 0 or b"Traceback" in proc.stderr:
            failures.append(f"query {args[-1]}: rc {proc.returncode} {proc.stderr[-300:]!r}")
        elif "--json" not in args and proc.stdout.count(b" -> sketch") != len(good):
            failures.append(f"text output: {proc.stdout.count(b' -> sketch')} result lines for {len(good)} files")
    tried += 1
    proc = subprocess.run(rk.cli("query", str(too_long), str(deep.parent), "--domain", "sketch", "--bundle", str(bundle)),
                          capture_output=True)
    errs = proc.stderr.splitlines()
    if proc.returncode != 2 or len(errs) != 2 or not all(e.startswith(b"uemctl: error: ") for e in errs):
        failures.append(f"beyond PATH_MAX: rc {proc.returncode}, stderr {proc.stderr[-400:]!r}")
    b = work / "model.uem"
    shutil.copytree(bundle, b)
    tried += len(good)
    proc = subprocess.run(rk.cli("index", "add", str(b), *map(str, good), "--domain", "sketch"), capture_output=True)
    if proc.returncode != 0 or f"added {len(good)} images".encode() not in proc.stdout:
        failures.append(f"index add: rc {proc.returncode} {proc.stdout[-200:]!r} {proc.stderr[-300:]!r}")
    return {"cases": tried, "failures": failures,
            "detail": "non-UTF-8, newline, ESC, ~4000-char path; one path beyond PATH_MAX (one error line each)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuzz", type=int, default=20000, help="mutated image files")
    ap.add_argument("--tamper-flips", type=int, default=20, help="random byte flips per bundle file")
    ap.add_argument("--manifest-fuzz", type=int, default=3000, help="consistent random manifests")
    ap.add_argument("--kill-trials", type=int, default=20, help="kill -9 trials per writer")
    ap.add_argument("--queries", type=int, default=10000, help="queries while adding")
    ap.add_argument("--stream-files", type=int, default=10000, help="files in the streamed query directory")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=",".join(CATEGORIES), help="comma-separated subset of " + ",".join(CATEGORIES))
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "reliability.json")
    args = ap.parse_args()
    only = args.only.split(",")
    plan = {"fuzz": (fuzz, args.fuzz), "tamper": (tamper, args.tamper_flips),
            "manifest": (manifest, args.manifest_fuzz), "kill-add": (kill_add, args.kill_trials),
            "kill-rewrite": (kill_rewrite, args.kill_trials), "kill-export": (kill_export, args.kill_trials),
            "concurrency": (concurrency, args.queries), "two-process": (two_process, 5),
            "stream": (stream, args.stream_files), "names": (names, 0)}
    print("load average at start:", os.getloadavg(), file=sys.stderr)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="uem-reliability-") as tmp:
        tmp = Path(tmp)
        bundle = make_bundle(tmp / "base", keep_fp32=True)
        for name in CATEGORIES:
            if name not in only:
                continue
            fn, n = plan[name]
            t0 = time.monotonic()
            print(f"{name} ...", file=sys.stderr, flush=True)
            (tmp / name).mkdir()
            row = fn(tmp / name, bundle, n, args.seed)
            row["seconds"] = round(time.monotonic() - t0, 1)
            rows[name] = row
            print(f"{name}: {row['cases']} cases, {len(row['failures'])} failures, {row['seconds']} s; {row['detail']}",
                  file=sys.stderr, flush=True)
            for f in row["failures"][:10]:
                print("  FAIL", f[:500], file=sys.stderr)
    cmd = "benchmarks/reliability.py " + " ".join(sys.argv[1:])
    print(f"\n| category | cases tried | failures | seed | wall s | what ran |\n|---|---:|---:|---:|---:|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['cases']} | {len(r['failures'])} | {args.seed} | {r['seconds']} | {r['detail']} |")
    print(f"\ncommand: `.venv/bin/python {cmd}`; load average at end {tuple(round(x, 2) for x in os.getloadavg())}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"command": cmd, "seed": args.seed, "rows": rows}, indent=1))
    sys.exit(1 if any(r["failures"] for r in rows.values()) else 0)


if __name__ == "__main__":
    main()
