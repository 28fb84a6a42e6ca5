"""The fuzz driver: Engine.query over a folder of files in a child process (a crash in a C decoder
then shows up as a failed trial, not a dead pytest), and `uemctl query` as a real process over the
same files; every outcome is checked against what its corpus case expects, with a hang watchdog.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import uem

from .corpus import Case

FUZZ_DOMAIN = "sketch"     # uem.testing.bundles' sketch domain holds red and blue concepts
FUZZ_K = 5
HANG_LIMIT_S = 2.0         # the bound per file (a watchdog, not a benchmark)
_SRC = Path(uem.__file__).resolve().parent.parent  # the child imports the same uem as this process


_FUZZ_CHILD = r"""
import json, os, signal, sys, time
sys.path.insert(0, {src!r})
from uem.engine import Engine
from uem.engine.errors import UemError

class Hang(Exception):
    pass

def alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
eng = Engine.open(sys.argv[1], threads=1)
ids = {{it["id"]: it.get("label") for it in eng.snapshot().info.domains[{domain!r}].items}}
names = sorted(os.listdir(sys.argv[2]))
with open(sys.argv[3], "w") as out:
    for name in names:
        path = os.path.join(sys.argv[2], name)
        rec = {{"name": name}}
        t0 = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, {limit})
        try:
            r = eng.query(path, {domain!r}, k={k})
            rec.update(outcome="answer", accepted=r.accepted, domain=r.domain,
                       hits=[[h.id, h.score, ids.get(h.id, "?")] for h in r.hits],
                       known=all(h.id in ids for h in r.hits))
        except Hang:
            rec.update(outcome="hang")
        except UemError as e:
            rec.update(outcome="typed", type=type(e).__name__, message=str(e))
        except BaseException as e:
            rec.update(outcome="bug", type=type(e).__name__, message=repr(e)[:300])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        rec["seconds"] = time.perf_counter() - t0
        out.write(json.dumps(rec) + "\n")
        out.flush()
"""


@dataclass
class FuzzReport:
    """What one fuzz pass saw: per-file records, and everything that counts as a failure."""

    records: list[dict]
    failures: list[str] = field(default_factory=list)
    child_rc: int = 0

    def count(self, outcome: str) -> int:
        return sum(r["outcome"] == outcome for r in self.records)


def _check_record(rec: dict, case: Case | None, limit: float) -> str | None:
    name, outcome = rec["name"], rec["outcome"]
    if outcome in ("bug", "hang"):
        return f"{name}: {outcome} {rec.get('type', '')} {rec.get('message', '')}"
    if rec["seconds"] > limit:
        return f"{name}: took {rec['seconds']:.2f} s (limit {limit} s)"
    if outcome == "answer":
        scores = [s for _, s, _ in rec["hits"]]
        if rec["domain"] != FUZZ_DOMAIN or not rec["known"] or len(rec["hits"]) > FUZZ_K \
                or len({i for i, _, _ in rec["hits"]}) != len(rec["hits"]) \
                or not all(np.isfinite(scores)) or any(abs(s) > 1.001 for s in scores) \
                or any(a < b - 1e-5 for a, b in zip(scores, scores[1:])):
            return f"{name}: malformed answer {rec}"
        if rec["accepted"] and not rec["hits"]:
            return f"{name}: accepted without hits"
    if case is None:
        return None
    if case.expect == "error" and (outcome != "typed" or case.needle not in rec.get("message", "")):
        return f"{name}: expected a typed error mentioning {case.needle!r}, got {rec}"
    if case.expect in ("answer", "red") and outcome != "answer":
        return f"{name}: expected an answer, got {rec}"
    if case.expect == "red" and not (rec["accepted"] and rec["hits"] and rec["hits"][0][2] == "red"):
        return f"{name}: expected an accepted answer whose top hit is red, got {rec}"
    return None


def fuzz_engine(bundle: Path, folder: Path, cases: dict[str, Case], *, limit: float = HANG_LIMIT_S,
                timeout: float = 600.0) -> FuzzReport:
    """Engine.query over every file of `folder` in a child process; checks each outcome."""
    out = folder.parent / (folder.name + ".engine.jsonl")
    code = _FUZZ_CHILD.format(src=str(_SRC), domain=FUZZ_DOMAIN, limit=limit, k=FUZZ_K)
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(bundle), str(folder), str(out)],
                              capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        rc, tail = -1, "child timed out"
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    rep = FuzzReport(records, child_rc=rc)
    if rc != 0:
        last = records[-1]["name"] if records else None
        rep.failures.append(f"fuzz child died (rc {rc}) after {len(records)} files (last done: {last}): {tail}")
    done = {r["name"] for r in records}
    rep.failures += [f"{n}: never finished" for n in sorted(set(cases) - done)][:20]
    for rec in records:
        why = _check_record(rec, cases.get(rec["name"]), limit)
        if why:
            rep.failures.append(why)
    return rep


def fuzz_cli(bundle: Path, folder: Path, engine_records: list[dict], *,
             timeout: float = 600.0) -> tuple[int, list[str]]:
    """`uemctl query FOLDER --json` as a real process over the same files: exit code 0/2, one
    stderr line per bad file (and only those), no traceback, and the same verdict per file as the
    engine pass. Returns (results seen, failures)."""
    try:
        proc = subprocess.run([sys.executable, "-m", "uem.cli.app", "query", str(folder), "--domain",
                               FUZZ_DOMAIN, "-k", str(FUZZ_K), "--json", "--bundle", str(bundle),
                               "--threads", "1"], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 0, ["uemctl query timed out"]
    fails = []
    if "Traceback" in proc.stderr:
        fails.append(f"traceback on stderr: {proc.stderr[-1500:]}")
    try:
        doc = json.loads(proc.stdout)
    except ValueError:
        return 0, fails + [f"stdout is not JSON (rc {proc.returncode}): {proc.stdout[-500:]!r} {proc.stderr[-500:]!r}"]
    results = doc["results"]
    bad = {Path(r["query"]).name for r in results if "error" in r}
    lines = proc.stderr.splitlines()
    if proc.returncode != (2 if bad else 0):
        fails.append(f"exit code {proc.returncode} with {len(bad)} bad files")
    if len(lines) != len(bad) or doc["errors"] != len(bad) \
            or not all(line.startswith("uemctl: error: ") for line in lines):
        fails.append(f"{len(lines)} stderr lines for {len(bad)} bad files: {lines[:3]}")
    if sorted(Path(r["query"]).name for r in results) != sorted(os.listdir(folder)):
        fails.append("the results do not cover exactly the files of the folder")
    engine_bad = {r["name"] for r in engine_records if r["outcome"] != "answer"}
    if bad != engine_bad:
        fails.append(f"CLI and engine disagree on {sorted(bad ^ engine_bad)[:5]}")
    return len(results), fails
