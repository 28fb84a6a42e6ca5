"""Reliability harness shared by the fast tests (tests/test_reliability_*.py) and the long trials
(benchmarks/reliability.py): an image corpus and a seeded byte mutator, a fuzz driver that runs in a
child process (a crash in a C decoder then shows up as a failed trial, not a dead pytest), kill -9
trials against bundle writers, and a query/add hammer that checks every answer against the chain of
committed states.

Everything is seeded; nothing here measures time except the per-file hang watchdog of the fuzzer.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
FUZZ_DOMAIN = "sketch"     # bundle_factory's sketch domain holds red and blue concepts
FUZZ_K = 5
HANG_LIMIT_S = 2.0         # the bound per file (a watchdog, not a benchmark)

# ---------------------------------------------------------------------------------------------
# the named corpus


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def red_picture(size: tuple[int, int] = (40, 40), seed: int = 0) -> Image.Image:
    """A noisy full-frame red picture: bundle_factory's 'red' concept, so its answer is known."""
    rng = np.random.default_rng(seed)
    a = np.empty((size[1], size[0], 3), np.float32)
    a[:] = (220, 30, 30)
    a += rng.normal(0, 10, a.shape)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_header(width: int, height: int, payload: bytes = b"\x00" * 64) -> bytes:
    """A PNG whose IHDR declares width x height (valid CRCs) over a tiny IDAT: a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(payload)) + _png_chunk(b"IEND", b""))


def gif_with_header(width: int, height: int) -> bytes:
    """A GIF whose screen and image descriptor declare width x height (max 65535 each)."""
    g = _save(Image.new("P", (2, 2), 0), "GIF")
    b = bytearray(g)
    b[6:10] = struct.pack("<HH", width, height)
    i = b.index(b"\x2c")  # image descriptor
    b[i + 5:i + 9] = struct.pack("<HH", width, height)
    return bytes(b)


def bmp_with_header(width: int, height: int) -> bytes:
    b = bytearray(_save(Image.new("RGB", (2, 2), (255, 0, 0)), "BMP"))
    b[18:26] = struct.pack("<ii", width, height)
    return bytes(b)


def zlib_bomb_png(side: int) -> bytes:
    """A real side x side all-white RGB PNG: a few hundred KB that inflate to side*side*3 bytes."""
    raw_row = b"\x00" + b"\xff" * (3 * side)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(raw_row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


# Transforms that display EXIF orientation n, written out independently of PIL's exif_transpose.
ORIENTATION_OPS = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                   4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                   6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                   8: Image.Transpose.ROTATE_90}


def oriented_jpeg(orientation: int, im: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(im, "JPEG", quality=95, exif=exif.tobytes())


@dataclass(frozen=True)
class Case:
    """One corpus file. expect: 'red' (answered, top hit red), 'answer' (any well-formed answer),
    'error' (a typed error), 'either' (answer or typed error: mutated files)."""

    name: str
    data: bytes
    expect: str
    needle: str = ""  # for 'error': a word the message must contain


def seeds() -> dict[str, bytes]:
    """Valid images of every format the engine reads: the mutator's starting points."""
    red = red_picture()
    frames = [red_picture(seed=s).convert("P") for s in range(3)]
    pal = Image.new("P", (24, 24), 1)
    pal.putpalette([255, 255, 255, 220, 30, 30] + [0] * 762)
    rgba = red.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(red.size))
    exif = Image.Exif()
    exif[0x0112] = 6
    return {
        "png": _save(red, "PNG"),
        "png-rgba": _save(rgba, "PNG"),
        "png-pal": _save(pal, "PNG", transparency=0),
        "png-16": _save(Image.fromarray(np.arange(24 * 24, dtype=np.uint16).reshape(24, 24) * 100), "PNG"),
        "jpg": _save(red, "JPEG", quality=90),
        "jpg-exif": _save(red, "JPEG", quality=90, exif=exif.tobytes()),
        "jpg-progressive": _save(red, "JPEG", quality=80, progressive=True),
        "jpg-cmyk": _save(red.convert("CMYK"), "JPEG"),
        "gif": _save(frames[0], "GIF"),
        "gif-anim": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "webp": _save(red, "WEBP", quality=80),
        "webp-lossless": _save(rgba, "WEBP", lossless=True),
        "webp-anim": _save(red, "WEBP", save_all=True, append_images=[red_picture(seed=9)], duration=50),
        "bmp": _save(red, "BMP"),
        "tif": _save(red, "TIFF"),
        "tif-lzw": _save(red, "TIFF", compression="tiff_lzw"),
        "ppm": _save(red, "PPM"),
    }


EXTENSION = {"png": ".png", "jpg": ".jpg", "gif": ".gif", "webp": ".webp", "bmp": ".bmp",
             "tif": ".tif", "ppm": ".ppm"}


def ext_of(seed_name: str) -> str:
    return EXTENSION[seed_name.split("-")[0]]


def named_corpus() -> list[Case]:
    """The hand-made cases of the issue: truncations, junk, bombs, odd modes, EXIF orientations."""
    red = red_picture()
    cases: list[Case] = []
    for name, data in seeds().items():
        ext = ext_of(name)
        # every seed is a valid picture of red (or of red-ish frames / a grey ramp for png-16)
        cases.append(Case(f"seed-{name}{ext}", data, "answer" if name == "png-16" else "red"))
        for frac in (0.1, 0.5, 0.9):
            cases.append(Case(f"trunc{int(frac * 100)}-{name}{ext}", data[:max(1, int(len(data) * frac))],
                              "either"))
    rng = np.random.default_rng(12345)
    cases += [
        Case("zero-bytes.png", b"", "error", "empty"),
        Case("random-4k.png", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(), "error", "not an image"),
        Case("random-1.jpg", b"\x07", "error", "not an image"),
        Case("text.png", b"just some text, not an image\n" * 20, "error", "not an image"),
        Case("utf16-text.jpg", "hello".encode("utf-16"), "error", "not an image"),
        Case("html.gif", b"<html><body>GIF89a</body></html>", "error", "not an image"),
        Case("png-magic-only.png", b"\x89PNG\r\n\x1a\n", "error", ""),
        Case("jpeg-soi-only.jpg", b"\xff\xd8\xff", "error", ""),
        Case("huge-ihdr.png", png_with_header(100_000, 100_000), "error", "too large"),
        Case("bomb-ihdr-6500.png", png_with_header(6500, 6500), "error", "too large"),
        Case("huge-ihdr-max.png", png_with_header(2**31 - 1, 2**31 - 1), "error", ""),
        Case("zero-ihdr.png", png_with_header(0, 10), "error", ""),
        Case("huge-gif.gif", gif_with_header(65535, 65535), "error", "too large"),
        Case("huge-bmp.bmp", bmp_with_header(200_000, 200_000), "error", "too large"),
        Case("huge-bmp-negative.bmp", bmp_with_header(50_000, -50_000), "error", ""),
        Case("one-pixel.png", _save(Image.new("RGB", (1, 1), (220, 30, 30)), "PNG"), "red"),
        Case("one-pixel.gif", _save(Image.new("P", (1, 1), 0), "GIF"), "answer"),
        Case("strip-10000x10.png", _save(Image.new("RGB", (10000, 10), (220, 30, 30)), "PNG"), "answer"),
        Case("strip-10x10000.jpg", _save(Image.new("RGB", (10, 10000), (220, 30, 30)), "JPEG"), "answer"),
        Case("cmyk.jpg", _save(red.convert("CMYK"), "JPEG"), "red"),
        Case("cmyk.tif", _save(red.convert("CMYK"), "TIFF"), "red"),
        Case("gray16.png", _save(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "PNG"), "answer"),
        Case("gray16.tif", _save(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "TIFF"), "answer"),
        Case("float32.tif", _save(Image.fromarray(np.full((20, 20), 0.5, np.float32)), "TIFF"), "answer"),
        Case("bilevel.png", _save(Image.new("1", (20, 20), 1), "PNG"), "answer"),
        Case("la.png", _save(Image.new("LA", (20, 20), (0, 0)), "PNG"), "answer"),
    ]
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 220, 30, 30] + [0] * 762)
    pal.paste(1, (5, 5, 15, 15))
    cases.append(Case("palette-transparent.png", _save(pal, "PNG", transparency=0), "answer"))
    cases.append(Case("palette-transparent.gif", _save(pal, "GIF", transparency=0), "answer"))
    anim = [red_picture(seed=s) for s in range(4)]
    cases.append(Case("animated.png", _save(anim[0], "PNG", save_all=True, append_images=anim[1:]), "red"))
    cases.append(Case("animated.gif", _save(anim[0].convert("P"), "GIF", save_all=True,
                                            append_images=[a.convert("P") for a in anim[1:]]), "red"))
    cases.append(Case("animated.webp", _save(anim[0], "WEBP", save_all=True, append_images=anim[1:]), "red"))
    for o in ORIENTATION_OPS:
        cases.append(Case(f"exif-orientation-{o}.jpg", oriented_jpeg(o, red_picture((48, 24))), "red"))
    return cases


# ---------------------------------------------------------------------------------------------
# the mutator

_INTERESTING_8 = [0x00, 0x01, 0x7F, 0x80, 0xFF]
_INTERESTING_32 = [0, 1, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 100_000]


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute every chunk CRC so a mutated PNG gets past the CRC check into the decoders."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    out, pos = bytearray(data[:8]), 8
    while pos + 12 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 12 + n > len(data):
            break
        body = data[pos + 4:pos + 8 + n]
        out += data[pos:pos + 8 + n] + struct.pack(">I", zlib.crc32(body))
        pos += 12 + n
    return bytes(out + data[pos:])


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """1-4 random edits (bit flips, interesting values, inserts, deletes, duplicates, truncation);
    half of the positions fall in the first 64 bytes, where the headers are."""
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            b += bytes([rnd.randrange(256)])
        pos = rnd.randrange(min(len(b), 64)) if rnd.random() < 0.5 else rnd.randrange(len(b))
        op = rnd.randrange(8)
        if op == 0:
            b[pos] ^= 1 << rnd.randrange(8)
        elif op == 1:
            b[pos] = rnd.randrange(256)
        elif op == 2:
            b[pos] = rnd.choice(_INTERESTING_8)
        elif op == 3:
            v = rnd.choice(_INTERESTING_32)
            b[pos:pos + 4] = struct.pack(rnd.choice([">I", "<I"]), v)
        elif op == 4:
            del b[pos:pos + rnd.randint(1, 32)]
        elif op == 5:
            b[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 16)))
        elif op == 6:
            span = bytes(b[pos:pos + rnd.randint(1, 64)])
            b[pos:pos] = span * rnd.randint(1, 8)
        else:
            del b[rnd.randrange(len(b)):]
    out = bytes(b)
    return _fix_png_crcs(out) if rnd.random() < 0.7 else out


def mutated_corpus(n: int, seed: int) -> list[Case]:
    """n mutants, spread round-robin over the seeds; each named after its seed format."""
    rnd = random.Random(seed)
    base = seeds()
    names = sorted(base)
    return [Case(f"mut{i:06d}-{names[i % len(names)]}{ext_of(names[i % len(names)])}",
                 mutate(base[names[i % len(names)]], rnd), "either")
            for i in range(n)]


def write_cases(folder: Path, cases: list[Case]) -> dict[str, Case]:
    folder.mkdir(parents=True, exist_ok=True)
    for c in cases:
        (folder / c.name).write_bytes(c.data)
    return {c.name: c for c in cases}


# ---------------------------------------------------------------------------------------------
# fuzz driver: runs in a child process

_FUZZ_CHILD = r"""
import json, os, signal, sys, time
sys.path.insert(0, {here!r})
from uem.engine import Engine
from uem.engine.errors import UemError

class Hang(Exception):
    pass

def alarm(*_):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
eng = Engine.open(sys.argv[1], threads=1)
ids = {{it["id"]: it.get("label") for it in eng._snap.info.domains[{domain!r}].items}}
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
    code = _FUZZ_CHILD.format(here=str(HERE), domain=FUZZ_DOMAIN, limit=limit, k=FUZZ_K)
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
    eng.query_vector(np.ones(info.embed_dim, np.float32), some, k=3, no_reject=True)
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
    eng.add_vectors(next(iter(eng.domains)), np.ones((1, eng.embed_dim), np.float32),
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
# concurrency: queries against a growing domain


@dataclass
class HammerReport:
    queries: int
    adds: int
    errors: list[str]
    states: int           # distinct committed states the queries saw


def hammer(bundle: Path, *, queries: int, threads: int = 8, adds: int = 10, per_add: int = 2,
           seed: int = 0, domain: str = "sketch") -> HammerReport:
    """`threads` threads query (images and vectors, k = the final size) while one thread adds
    `adds` batches of `per_add` images (readers run at least `queries` in all, and until the last
    add is committed). Every answer's hit ids must be exactly the ids of one
    committed state (a prefix of the final item order), and each thread's states never go back."""
    from bundle_factory import draw, png_bytes
    from uem.engine import Engine

    eng = Engine.open(bundle, threads=1)
    rng = np.random.default_rng(seed)
    base_ids = [it["id"] for it in eng._snap.info.domains[domain].items]
    final_k = len(base_ids) + adds * per_add
    new_imgs = [png_bytes(draw("red" if i % 2 else "blue", domain, rng)) for i in range(adds * per_add)]
    new_ids = [f"hammer-{seed}-{i}" for i in range(adds * per_add)]
    order = base_ids + new_ids  # committed states are the prefixes of this list, in whole adds
    valid = {len(base_ids) + a * per_add for a in range(adds + 1)}
    qimgs = [png_bytes(draw(c, "photo", rng)) for c in ("red", "green", "red", "green")]
    qvecs = eng.embed(qimgs)
    errors: list[str] = []
    done = [0] * threads
    budget = [queries // threads + (i < queries % threads) for i in range(threads)]
    adder_done = threading.Event()
    seen_sizes: set[int] = set()

    def reader(t: int) -> None:
        last = 0
        try:
            j = 0
            while j < budget[t] or not adder_done.is_set():  # at least the budget, all adds overlapped
                j += 1
                if j % 4 == 0:
                    r = eng.query(qimgs[j % len(qimgs)], domain, k=final_k, no_reject=True)
                else:
                    r = eng.query_vector(qvecs[j % len(qvecs)], domain, k=final_k, no_reject=True)
                ids = {h.id for h in r.hits}
                n = len(r.hits)
                if n not in valid or len(ids) != n or ids != set(order[:n]):
                    errors.append(f"thread {t}: {n} hits not one committed state")
                    return
                if n < last:
                    errors.append(f"thread {t}: went back from {last} to {n} items")
                    return
                last = n
                seen_sizes.add(n)
                done[t] += 1
        except Exception as e:  # any exception is a failure of the trial
            errors.append(f"thread {t}: {type(e).__name__}: {e}")

    def adder() -> None:
        try:
            for a in range(adds):
                s = slice(a * per_add, (a + 1) * per_add)
                eng.add(domain, new_imgs[s], ids=new_ids[s])
        except Exception as e:
            errors.append(f"adder: {type(e).__name__}: {e}")
        finally:
            adder_done.set()

    ts = [threading.Thread(target=reader, args=(t,)) for t in range(threads)]
    at = threading.Thread(target=adder)
    for t in ts:
        t.start()
    at.start()
    for t in ts:
        t.join()
    at.join()
    added = eng.count(domain) - len(base_ids)
    if eng.count(domain) not in valid:
        errors.append(f"final count {eng.count(domain)} is not a whole number of adds")
    if Engine.open(bundle, threads=1).count(domain) != eng.count(domain):
        errors.append("the engine serves a state that is not the one on disk")
    return HammerReport(sum(done), added // per_add, errors, len(seen_sizes))


# ---------------------------------------------------------------------------------------------
# bundle tampering: every file, every way; checked with spies on hnswlib and onnxruntime


class LoaderSpy:
    """Records every file handed to hnswlib (Index.load_index) or onnxruntime (InferenceSession)
    while active. A recorder, not a tripwire: the engine wraps loader exceptions into BundleError,
    so a raising spy could be swallowed and pass unnoticed."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._undo: list = []

    def __enter__(self) -> "LoaderSpy":
        import hnswlib
        import onnxruntime

        spy = self
        real_index, real_session = hnswlib.Index, onnxruntime.InferenceSession

        class Index(real_index):  # type: ignore[misc, valid-type]
            def load_index(self, path, *a, **k):
                spy.calls.append(f"hnswlib:{path}")
                return super().load_index(path, *a, **k)

        def session(path, *a, **k):
            spy.calls.append(f"onnxruntime:{path}")
            return real_session(path, *a, **k)
        hnswlib.Index, onnxruntime.InferenceSession = Index, session
        self._undo = [(hnswlib, "Index", real_index), (onnxruntime, "InferenceSession", real_session)]
        return self

    def __exit__(self, *exc) -> None:
        for mod, name, real in self._undo:
            setattr(mod, name, real)


def rewrite_manifest(bundle: Path, m: dict) -> None:
    """Edit the manifest *consistently* (fresh checksum), as a careless tool or an attacker would."""
    from uem.engine.bundle import _checksum

    m = dict(m)
    m.pop("checksum", None)
    m["checksum"] = _checksum(m)
    (bundle / "manifest.json").write_text(json.dumps(m))


def _rehash(bundle: Path, m: dict, logical: str) -> dict:
    from uem.engine.bundle import sha256_file

    ent = m["files"][logical]
    p = bundle / ent["path"]
    ent["size"], ent["sha256"] = p.stat().st_size, sha256_file(p)
    return m


def tamper_cases(base: Path, rnd: random.Random, flips: int = 4):
    """(label, function(bundle_dir) -> None) for each tampering of a copy of `base`: for every file
    of the manifest and the manifest itself: byte flips (first, middle, last, `flips` random),
    truncation (empty, half, one byte short), one byte appended, deletion, a directory in its place;
    for every entry: paths leaving the bundle (../, absolute, symlinked file, symlinked generation);
    wrong format versions; an honestly re-hashed index of another dim, vectors of another dtype and
    pickled object arrays."""
    m0 = json.loads((base / "manifest.json").read_text())
    targets = {name: ent["path"] for name, ent in m0["files"].items()}
    targets["manifest.json"] = "manifest.json"
    cases = []

    def flip(rel, pos, mask):
        def f(b):
            p = b / rel
            data = bytearray(p.read_bytes())
            data[pos % len(data)] ^= mask
            p.write_bytes(bytes(data))
        return f

    def cut(rel, keep):
        def f(b):
            p = b / rel
            data = p.read_bytes()
            p.write_bytes(data[:keep(len(data))])
        return f

    def append(rel):
        return lambda b: (b / rel).write_bytes((b / rel).read_bytes() + b"\0")

    def delete(rel):
        return lambda b: (b / rel).unlink()

    def to_dir(rel):
        def f(b):
            (b / rel).unlink()
            (b / rel).mkdir()
        return f

    for name, rel in targets.items():
        size = (base / rel).stat().st_size
        positions = [0, size // 2, size - 1] + [rnd.randrange(size) for _ in range(flips)]
        for pos in positions:
            # the manifest is JSON: XOR 0xFF never turns one valid JSON byte into another
            mask = 0xFF if name == "manifest.json" else rnd.randrange(1, 256)
            cases.append((f"flip {name}@{pos}^{mask:#x}", flip(rel, pos, mask)))
        cases += [(f"empty {name}", cut(rel, lambda n: 0)), (f"half {name}", cut(rel, lambda n: n // 2)),
                  (f"short {name}", cut(rel, lambda n: n - 1)), (f"append {name}", append(rel)),
                  (f"delete {name}", delete(rel)), (f"directory {name}", to_dir(rel))]

    def repoint(logical, new_path):
        def f(b):
            m = json.loads((b / "manifest.json").read_text())
            m["files"][logical]["path"] = new_path(b, m["files"][logical]["path"])
            rewrite_manifest(b, m)
        return f

    def symlink_file(logical):
        def f(b):
            p = b / m0["files"][logical]["path"]
            outside = b.parent / f"outside-{p.name}"
            outside.write_bytes(p.read_bytes())
            p.unlink()
            p.symlink_to(outside)
        return f

    def symlink_generation(b):
        gen = next(iter(targets.values())).split("/", 1)[0]
        outside = b.parent / "outside-generation"
        os.replace(b / gen, outside)
        (b / gen).symlink_to(outside, target_is_directory=True)

    for logical in m0["files"]:
        cases += [
            (f"path ../ {logical}", repoint(logical, lambda b, p: "../" + p)),
            (f"path inner ../ {logical}", repoint(logical, lambda b, p: p.split("/", 1)[0] + "/../../" + p)),
            (f"path absolute {logical}", repoint(logical, lambda b, p: str((b / p).resolve()))),
            (f"path /etc/passwd {logical}", repoint(logical, lambda b, p: "/etc/passwd")),
            (f"path backslash {logical}", repoint(logical, lambda b, p: p.replace("/", "\\"))),
            (f"symlink out {logical}", symlink_file(logical)),
        ]
    cases.append(("symlinked generation directory", symlink_generation))

    def manifest_edit(fn):
        def f(b):
            m = json.loads((b / "manifest.json").read_text())
            fn(b, m)
            rewrite_manifest(b, m)
        return f

    for v in (0, 3, 999, "1", None, 1.0, True):
        cases.append((f"format_version {v!r}", manifest_edit(lambda b, m, v=v: m.__setitem__("format_version", v))))
    cases.append(("format name", manifest_edit(lambda b, m: m.__setitem__("format", "other"))))
    cases.append(("no format_version", manifest_edit(lambda b, m: m.pop("format_version"))))
    cases.append(("hnsw dim != embed_dim", manifest_edit(lambda b, m: m["hnsw"].__setitem__("dim", m["hnsw"]["dim"] + 4))))
    cases.append(("embed_dim changed", manifest_edit(lambda b, m: (m["model"].__setitem__("embed_dim", m["model"]["embed_dim"] + 4),
                                                                   m["hnsw"].__setitem__("dim", m["hnsw"]["dim"] + 4)))))
    cases.append(("hnsw M changed", manifest_edit(lambda b, m: m["hnsw"].__setitem__("M", m["hnsw"]["M"] * 2))))

    def other_dim_index(b, m):
        from uem.engine.index import DomainIndex

        d = m["domains"][0]
        logical = d["files"]["index"]
        p = b / m["files"][logical]["path"]
        v = np.random.default_rng(0).normal(size=(d["count"], m["model"]["embed_dim"] + 4)).astype(np.float32)
        p.unlink()
        DomainIndex.build(v, space="ip", M=m["hnsw"]["M"], ef_construction=40, ef_search=16).save(p)
        _rehash(b, m, logical)

    def npy_swap(kind, arr_fn):
        def f(b, m):
            logical = m["domains"][0]["files"]["vectors"] if kind == "vectors" else m["prototypes"]["centroids"]
            p = b / m["files"][logical]["path"]
            old = np.load(p, allow_pickle=False)
            p.unlink()
            np.save(p, arr_fn(old), allow_pickle=True)
            _rehash(b, m, logical)
        return f
    cases.append(("index of another dim, honestly hashed", manifest_edit(other_dim_index)))
    cases.append(("vectors float64, honestly hashed", manifest_edit(npy_swap("vectors", lambda a: a.astype(np.float64)))))
    for kind in ("vectors", "prototypes"):
        cases += [
            (f"{kind} pickled object array, honestly hashed",
             manifest_edit(npy_swap(kind, lambda a: np.array([{"evil": 1}] * len(a), dtype=object)))),
            (f"{kind} transposed, honestly hashed", manifest_edit(npy_swap(kind, lambda a: np.ascontiguousarray(a.T)))),
        ]
    return cases


def run_tamper_matrix(base: Path, work: Path, seed: int, flips: int = 4) -> tuple[int, list[str]]:
    """Apply every tamper case to a fresh copy of `base`; Engine.open must raise BundleError and no
    file may reach hnswlib or onnxruntime. Returns (cases tried, failures)."""
    import shutil

    from uem.engine import Engine
    from uem.engine.errors import BundleError

    cases = tamper_cases(base, random.Random(seed), flips)
    failures = []
    for i, (label, apply) in enumerate(cases):
        case_dir = work / f"t{i}"
        b = case_dir / "model.uem"
        shutil.copytree(base, b, symlinks=True)
        apply(b)
        with LoaderSpy() as spy:
            try:
                Engine.open(b, threads=1)
                failures.append(f"{label}: opened without error")
            except BundleError as e:
                if not str(e).strip() or "\n" in str(e):
                    failures.append(f"{label}: unclear error {str(e)!r}")
            except Exception as e:  # any other exception type is a failure
                failures.append(f"{label}: {type(e).__name__}: {e}")
        if spy.calls:
            failures.append(f"{label}: reached a loader before failing: {spy.calls}")
        shutil.rmtree(case_dir, ignore_errors=True)
    return len(cases), failures


def _random_json_value(rnd: random.Random):
    return rnd.choice([None, True, -1, 0, 2**63, 1e308, float("1e-300"), "", "x" * 300, "../../etc/passwd",
                       [], {}, [1, 2], {"a": 1}, "g000001/encoder.onnx", 3.5])


def manifest_fuzz(base: Path, work: Path, n: int, seed: int) -> tuple[int, dict, list[str]]:
    """n consistent (re-checksummed) manifests, each with 1-3 random values replaced, deleted or
    retyped (the files stay the verified originals). Engine.open must either work or raise
    BundleError — never another exception. Returns (tried, outcome counts, failures)."""
    import copy
    import shutil

    from uem.engine import Engine
    from uem.engine.errors import BundleError

    rnd = random.Random(seed)
    m0 = json.loads((base / "manifest.json").read_text())
    b = work / "model.uem"
    shutil.copytree(base, b, symlinks=True)
    outcomes = {"opened": 0, "BundleError": 0}
    failures = []

    def slots(obj, path=()):
        yield path
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from slots(v, path + (k,))
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                yield from slots(v, path + (i,))
    for i in range(n):
        m = copy.deepcopy(m0)
        m.pop("checksum")
        for _ in range(rnd.randint(1, 3)):
            paths = [p for p in slots(m) if p]
            path = rnd.choice(paths)
            parent = m
            for key in path[:-1]:
                parent = parent[key]
            if rnd.random() < 0.2 and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = _random_json_value(rnd)
        try:
            rewrite_manifest(b, m)
        except ValueError:  # e.g. a float the canonical form refuses: not a case
            continue
        try:
            Engine.open(b, threads=1).close()
            outcomes["opened"] += 1
        except BundleError:
            outcomes["BundleError"] += 1
        except Exception as e:
            failures.append(f"case {i}: {type(e).__name__}: {e} (manifest {json.dumps(m)[:300]})")
    return sum(outcomes.values()), outcomes, failures


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
                      model=ModelConfig(input_size=32, embed_dim=16, head_hidden=32), seed=3)
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
