"""kill -9 trials against bundle writers: the bundle's committed state before and after, a writer
killed at a seeded moment (any time, or while it commits), and the checks that the bundle then holds
exactly the old or the new state and that the next write leaves nothing behind.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# ---------------------------------------------------------------------------------------------
# bundle states and kill -9 trials


@dataclass(frozen=True)
class BundleState:
    """What identifies a committed bundle state: its manifest checksum and each domain's ids."""

    checksum: str
    ids: dict[str, tuple[str, ...]]
    vectors_sha: dict[str, str]

    @property
    def counts(self) -> dict[str, int]:
        return {d: len(v) for d, v in self.ids.items()}


def bundle_state(path: Path) -> BundleState:
    """Verify the bundle fully (read_bundle + Engine.open + a query) and describe its state."""
    from uem.engine import Engine
    from uem.engine.bundle import read_bundle

    info = read_bundle(path)
    eng = Engine.open(path, threads=1)
    some = next(iter(info.domains))
    eng.query(vector=np.ones(info.embed_dim, np.float32), domain=some, k=3, no_reject=True)
    eng.close()
    return BundleState(info.manifest["checksum"],
                       {d: tuple(it["id"] for it in di.items) for d, di in info.domains.items()},
                       {d: di.vectors.sha256 for d, di in info.domains.items()})


def same_content(a: BundleState, b: BundleState) -> bool:
    """Equal ids and vectors (a re-run of the same write commits the same content, not the
    same manifest: generation numbers and timestamps differ). `b` without vectors: ids only."""
    return a.ids == b.ids and (not b.vectors_sha or a.vectors_sha == b.vectors_sha)


def referenced_generations(bundle: Path) -> set[str]:
    m = json.loads((bundle / "manifest.json").read_text())
    return {e["path"].split("/", 1)[0] for e in m["files"].values()}


def leftovers(bundle: Path, also_keep: set[str] = frozenset()) -> list[str]:
    """What a crashed writer may leave: temporaries, and generation folders referenced neither by
    the current manifest nor by `also_keep` (the previous manifest's, which a write keeps)."""
    from uem.engine.bundle import _GENERATION

    used = referenced_generations(bundle) | set(also_keep)
    out = []
    for p in bundle.iterdir():
        if p.name.startswith(".tmp-") or p.name.startswith("manifest.json.tmp"):
            out.append(p.name)
        elif _GENERATION.match(p.name) and p.name not in used:
            out.append(p.name)
    return sorted(out)


def write_and_check_cleanup(bundle: Path) -> list[str]:
    """One more successful write (an add of one vector); afterwards nothing but the current and
    the previous state may remain. Returns what is left over (should be [])."""
    from uem.engine import Engine

    previous = referenced_generations(bundle)
    eng = Engine.open(bundle, threads=1)
    eng.add_vectors(next(iter(eng.domains)), np.ones((1, eng.snapshot().info.embed_dim), np.float32),
                    [{"path": f"/cleanup-probe-{time.monotonic_ns()}"}])
    return leftovers(bundle, previous)


def _generations(bundle: Path) -> set[str]:
    try:
        return {p.name for p in bundle.iterdir() if p.name.startswith("g")}
    except OSError:
        return set()


@dataclass
class KillTrial:
    delay: float          # seconds after start (or after the new generation appeared)
    phase: str            # 'anytime' or 'commit' (killed while writing the new generation)
    outcome: str = ""     # 'old', 'new', 'finished' (exited before the kill) or 'MIX: ...'


def kill_trial(cmd: list[str], bundle: Path, old: BundleState, new: BundleState, *, delay: float,
               phase: str, env: dict | None = None, timeout: float = 300.0) -> KillTrial:
    """Start `cmd`, SIGKILL it `delay` s after it starts ('anytime') or after a new generation
    directory appears in the bundle ('commit'), then classify the bundle as old or new state."""
    trial = KillTrial(delay, phase)
    before = _generations(bundle)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t_end = time.monotonic() + timeout
    if phase == "commit":
        while proc.poll() is None and not (_generations(bundle) - before) and time.monotonic() < t_end:
            time.sleep(0.002)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if rc == -signal.SIGKILL:
        state = bundle_state(bundle)
        if state.checksum == old.checksum:
            trial.outcome = "old"
        elif same_content(state, new):
            trial.outcome = "new"
        else:
            trial.outcome = f"MIX: counts {state.counts}, old {old.counts}, new {new.counts}"
    elif rc == 0:
        state = bundle_state(bundle)
        trial.outcome = "finished" if same_content(state, new) else f"MIX: finished but {state.counts}"
    else:
        trial.outcome = f"MIX: writer failed (rc {rc}): {err[-500:]}"
    return trial


# ---------------------------------------------------------------------------------------------
# a tiny training run for `uemctl export` trials (needs the train extra)


def make_tiny_run(root: Path, per_domain: int = 8) -> Path:
    """data/{paint,line}/<shape>/<i>.png and an untrained-head run dir (input 32 px, 16-d)."""
    import torch
    from PIL import ImageDraw

    from uem.train.config import ModelConfig, TrainConfig
    from uem.train.model import build_encoder
    from uem.train.run import save_encoder

    data = root / "data"
    for domain, filled in (("paint", True), ("line", False)):
        for i in range(per_domain):
            folder = data / domain / f"s{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            im = Image.new("RGB", (40, 40), "white")
            d = ImageDraw.Draw(im)
            box = [4 + i, 4 + i, 30 + i % 5, 30 + i % 3]
            (d.ellipse if i % 2 else d.rectangle)(box, fill=(200, 40 * (i % 5), 40) if filled else None,
                                                  outline=(0, 0, 0), width=2)
            im.save(folder / f"{i}.png")
    cfg = TrainConfig(data=str(data), domains=["line", "paint"],
                      model=ModelConfig(input_size=32, embed_dim=16, head_hidden=32, grid=1), seed=3)
    torch.manual_seed(cfg.seed)
    run = root / "run"
    save_encoder(run, build_encoder(cfg.model, pretrained=True).eval(), cfg)
    return run


# ---------------------------------------------------------------------------------------------
# whole-bundle rewrites (what `uemctl export` does last), killed at random


_REWRITE_CHILD = r"""
import sys
import numpy as np
from uem.engine.bundle import DomainData, read_bundle, write_bundle
src = read_bundle(sys.argv[1])
def variant(drop):
    doms = []
    for name, d in src.domains.items():
        n = d.count - drop
        doms.append(DomainData(name, src.load_vectors(name, mmap=False)[:n], d.items[:n]))
    return doms
variants = [variant(0), variant(3)]
print("ready", flush=True)
i = 0
while True:
    write_bundle(sys.argv[2], encoder_onnx=src.encoder.path, encoder_fp32_onnx=None,
                 preprocess=src.preprocess, embed_dim=src.embed_dim, domains=variants[i % 2],
                 prototypes=src.load_prototypes(), hnsw=src.hnsw, calibration={}, extra={})
    i += 1
"""


def _vectors_match(src: Path, target: Path) -> bool:
    """Row i of every domain in `target` is (up to float rounding) row i of the same domain in `src`."""
    from uem.engine.bundle import read_bundle

    a, b = read_bundle(src), read_bundle(target)
    return all(np.allclose(b.load_vectors(d), a.load_vectors(d)[:b.domains[d].count], atol=1e-6)
               for d in b.domains)


def rewrite_kill_trials(src: Path, target: Path, trials: int, seed: int) -> tuple[list[str], list[str]]:
    """A child rewrites the bundle at `target` over and over, alternating two contents (A: `src`'s
    items, B: 3 fewer per domain); SIGKILL at a seeded random moment. The bundle must then hold A or
    B exactly, and the next write must clean up. Returns (outcomes, failures)."""
    import shutil

    rnd = random.Random(seed)
    shutil.copytree(src, target)
    a = bundle_state(target)
    outcomes, failures = [], []
    for t in range(trials):
        proc = subprocess.Popen([sys.executable, "-c", _REWRITE_CHILD, str(src), str(target)],
                                stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            failures.append(f"trial {t}: child did not start")
        time.sleep(rnd.uniform(0.0, 0.8))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        try:
            state = bundle_state(target)
        except Exception as e:
            failures.append(f"trial {t}: bundle does not open after the kill: {type(e).__name__}: {e}")
            break
        counts = {d: len(v) for d, v in a.ids.items()}
        if state.ids == a.ids:
            outcomes.append("A")
        elif set(state.ids) == set(a.ids) and all(state.ids[d] == a.ids[d][:counts[d] - 3] for d in a.ids):
            outcomes.append("B")
        else:
            failures.append(f"trial {t}: a mix: {state.counts}")
        if not _vectors_match(src, target):
            failures.append(f"trial {t}: vectors do not belong to their items")
        left = write_and_check_cleanup(target)
        if left:
            failures.append(f"trial {t}: leftovers after the next write: {left}")
        shutil.rmtree(target)
        shutil.copytree(src, target)
    return outcomes, failures


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "uem.cli.app", *args]


def writer_kill_trials(base: Path, cmd_for, work: Path, trials: int, seed: int, *,
                       compare_vectors: bool = True, commit_share: float = 0.5) -> tuple[list[KillTrial], list[str]]:
    """kill -9 trials of a CLI writer (`cmd_for(bundle) -> argv`) against copies of `base`.

    A reference run on its own copy gives the new state and the run's duration T. Each trial kills
    either at a seeded uniform moment in [0, 1.2 T] ('anytime') or a seeded moment after the new
    generation folder appeared ('commit', the window where files are written and the manifest is
    swapped). Afterwards the bundle must open (fully verified) holding exactly the old or the new
    state, and the next write must leave no leftovers. Returns (trials, failures)."""
    import shutil

    rnd = random.Random(seed)
    ref = work / "reference" / "model.uem"
    shutil.copytree(base, ref)
    t0 = time.monotonic()
    proc = subprocess.run(cmd_for(ref), capture_output=True, text=True)
    duration = time.monotonic() - t0
    if proc.returncode != 0:
        return [], [f"reference run failed: {proc.stderr[-800:]}"]
    new = bundle_state(ref)
    old = bundle_state(base)
    if not compare_vectors:  # a re-run commits equal ids but may differ in the last float bits
        new = BundleState(new.checksum, new.ids, {})
    done, failures = [], []
    for t in range(trials):
        b = work / f"trial{t}" / "model.uem"
        shutil.copytree(base, b)
        commit = rnd.random() < commit_share
        delay = rnd.uniform(0, 0.3 if commit else 1.2 * duration)
        trial = kill_trial(cmd_for(b), b, old, new, delay=delay, phase="commit" if commit else "anytime")
        done.append(trial)
        if trial.outcome.startswith("MIX"):
            failures.append(f"trial {t} ({trial.phase}, {delay:.2f} s): {trial.outcome}")
            continue
        left = write_and_check_cleanup(b)
        if left:
            failures.append(f"trial {t}: leftovers after the next write: {left}")
        shutil.rmtree(b.parent)
    return done, failures
