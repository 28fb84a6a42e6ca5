"""Load on `uemctl serve`: requests/s and p50/p99 latency of POST /v1/query at 1, 4 and 16
concurrent clients, beside `Engine.query` alone at the same concurrency, with adds running meanwhile.

    python benchmarks/serve_load.py BUNDLE [--domain D] [--clients 1,4,16] [--requests 400]
                                    [--max-seconds 60] [--adds 4] [--add-batch 8] [--json out.json]
    python benchmarks/serve_load.py --tiny      # a seeded tiny bundle: a smoke check in seconds

The bundle is copied to a temporary folder first (the adds go to the copy, never to BUNDLE). The
server runs as its own process (`python -m uem serve COPY --allow-add`) on 127.0.0.1 at a free port;
clients are threads of this process with one keep-alive connection each, sending the picture as the
raw request body. Per concurrency level: `Engine.query` alone first (threads sharing one engine
opened on the original bundle, the server idle), then the same pictures through HTTP while one more
thread adds `--adds` batches of `--add-batch` new pictures (mirrored bundle pictures, each made
distinct) through POST /v1/domains/{domain}/items; the clients go round the pictures again until
that thread is done, so every add commits while queries are being answered. One more query after
the adds must see all of them.

Checked on every answer: status 200, and that it came from a whole state. The added pictures' ids
(their sha256) and order are known in advance, so an answer reporting `count` items must report a
count that is the bundle's plus a whole number of batches, a generation that matches that number,
and only hits among the bundle's items and the first `count - initial` added ones. Bounded:
`--requests` queries (more only while adds are still running) and at most `--max-seconds` per
level; only loopback. Exit code 1 on any error.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from uem.engine import Engine

HOST = "127.0.0.1"
TOKEN = "serve-load-benchmark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(xs), q)) * 1000 if xs else None


# -- pictures ----------------------------------------------------------------------------------
def query_pictures(eng: Engine, target: str, n: int) -> list[bytes]:
    """Pictures of the bundle's own items, from the domains other than `target` (else from it)."""
    others = [d for d in eng.domains if d != target] or [target]
    out: list[bytes] = []
    per = max(1, n // len(others))
    for d in others:
        items = eng.items(d)
        for row in np.linspace(0, len(items) - 1, min(per, len(items))).astype(int):
            p = Path(items[int(row)]["path"])
            if p.is_file():
                out.append(p.read_bytes())
    if not out:
        raise SystemExit("serve_load: the bundle's items have no readable pictures to query with")
    return (out * (n // len(out) + 1))[:n]


def add_pictures(eng: Engine, domain: str, n: int) -> list[bytes]:
    """n new, distinct pictures for `domain`: its items mirrored, one pixel marked per copy."""
    items = eng.items(domain)
    out = []
    for i in range(n):
        with Image.open(items[i % len(items)]["path"]) as im:
            im = im.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        im.putpixel((0, 0), (i % 251, (i // 251) % 251, 7))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


# -- the server --------------------------------------------------------------------------------
def start_server(bundle: Path, media: Path, port: int, query_threads: int | None,
                 extra: list[str] | None = None) -> subprocess.Popen:
    """`python -m uem serve` on 127.0.0.1:port, adds allowed with TOKEN; returns once it answers."""
    cmd = [sys.executable, "-m", "uem", "serve", str(bundle), "--host", HOST, "--port", str(port),
           "--allow-add", "--media", str(media)]
    cmd += extra or ["--reload-interval", "0"]
    if query_threads:
        cmd += ["--query-threads", str(query_threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "UEM_TOKEN": TOKEN})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve_load: the server exited: {proc.stderr.read().strip()[-500:]}")
        try:
            c = http.client.HTTPConnection(HOST, port, timeout=2)
            c.request("GET", "/healthz")
            if c.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("serve_load: the server did not answer /healthz within 60 s")


class Client:
    """One keep-alive connection to the server (reconnects after an error)."""

    def __init__(self, port: int) -> None:
        self.port, self.conn = port, None

    def post(self, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=120)
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                r = self.conn.getresponse()
                return r.status, json.loads(r.read() or b"{}")
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


# -- one level ---------------------------------------------------------------------------------
def run_clients(n_clients: int, pictures: list[bytes], max_seconds: float, ask,
                more: Callable[[], bool] | None = None) -> dict:
    """`ask(client_index, picture)` for every picture, and round them again while `more()` is true,
    from n_clients threads, for at most max_seconds; latencies and errors."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    nxt = iter(range(1 << 62))
    stop_at = time.monotonic() + max_seconds

    def worker(ci: int) -> None:
        while time.monotonic() < stop_at:
            with lock:
                i = next(nxt)
            if i >= len(pictures) and not (more is not None and more()):
                return
            t0 = time.perf_counter()
            try:
                problem = ask(ci, pictures[i % len(pictures)])
            except Exception as e:  # noqa: BLE001 - counted, reported
                problem = f"{type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
            with lock:
                lat.append(dt)
                if problem:
                    errors.append(problem)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(worker, range(n_clients)))
    wall = time.perf_counter() - t0
    return {"clients": n_clients, "requests": len(lat), "errors": len(errors), "first_errors": errors[:5],
            "rps": len(lat) / wall if wall else None, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "seconds": wall}


class Consistency:
    """Whole-state checks of answers, from the bundle's ids and the adds' known order."""

    def __init__(self, eng: Engine, domain: str, batches: list[list[bytes]]) -> None:
        self.domain = domain
        self.count0, self.gen0 = eng.count(domain), eng.snapshot().generation
        self.base_ids = {it["id"] for it in eng.items(domain)}
        self.added = [hashlib.sha256(p).hexdigest() for b in batches for p in b]
        self.bounds = np.cumsum([0] + [len(b) for b in batches]).tolist()
        self.max_seen = (self.count0, self.gen0)
        self._lock = threading.Lock()  # check() runs in every client thread
        self.committed = 0              # pictures the adds reported added so far (all levels)

    def check(self, ans: dict) -> str | None:
        n_new = ans["count"] - self.count0
        if n_new not in self.bounds:
            return f"count {ans['count']} is not the bundle's plus whole adds"
        if ans["generation"] - self.gen0 != self.bounds.index(n_new):
            return f"generation {ans['generation']} does not match count {ans['count']}"
        allowed_new = set(self.added[:n_new])
        for h in ans["hits"]:
            if h["id"] not in self.base_ids and h["id"] not in allowed_new:
                return f"hit {h['id'][:16]} is not in the state of count {ans['count']}"
        with self._lock:
            self.max_seen = max(self.max_seen, (ans["count"], ans["generation"]))
        return None


def level(args, n: int, eng: Engine, port: int, pictures: list[bytes], batches: list[list[bytes]],
          check: Consistency) -> dict:
    engine_alone = run_clients(n, pictures, args.max_seconds,
                               lambda ci, p: None if eng.query(p, args.domain, k=args.k) else "no result")
    clients = [Client(port) for _ in range(n)]
    path = f"/v1/query?domain={args.domain}&k={args.k}"

    def ask(ci: int, picture: bytes) -> str | None:
        status, ans = clients[ci].post(path, picture, {"Content-Type": "application/octet-stream"})
        if status != 200:
            return f"HTTP {status}: {ans.get('error', '')}"
        return check.check(ans)

    adds: list[dict] = []
    adder_client = Client(port)

    queries_done = threading.Event()

    def adder() -> None:
        for batch in batches:
            time.sleep(args.add_every)
            boundary = b"uemloadboundary"
            body = b"".join(b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"images\"; "
                            + f'filename="{i}.png"'.encode() + b"\r\nContent-Type: image/png\r\n\r\n" + p + b"\r\n"
                            for i, p in enumerate(batch)) + b"--" + boundary + b"--\r\n"
            t0 = time.perf_counter()
            status, ans = adder_client.post(f"/v1/domains/{args.domain}/items", body, {
                "Content-Type": f"multipart/form-data; boundary={boundary.decode()}",
                "Authorization": f"Bearer {TOKEN}"})
            adds.append({"status": status, "seconds": time.perf_counter() - t0, "during": not queries_done.is_set(),
                         "added": ans.get("added"), "error": ans.get("error")})
            check.committed += ans.get("added") or 0

    t = threading.Thread(target=adder)
    t.start()
    served = run_clients(n, pictures, args.max_seconds, ask, more=t.is_alive)
    queries_done.set()
    t.join()  # every batch is added (bounded by --adds), also any after --max-seconds ended the queries
    status, after = clients[0].post(path, pictures[0], {"Content-Type": "application/octet-stream"})
    problem = f"HTTP {status}: {after.get('error', '')}" if status != 200 else check.check(after)
    if problem is None and after["count"] != check.count0 + check.committed:
        problem = f"the query after the adds saw {after['count']} items, not {check.count0 + check.committed}"
    if problem:
        served["errors"] += 1
        served["first_errors"].append(f"after the adds: {problem}")
    bad_adds = [a for a in adds if a["status"] != 200 or a["added"] != args.add_batch]
    return {"clients": n, "engine": engine_alone, "http": served, "adds": len(adds),
            "count_after_adds": after.get("count"),
            "adds_during_queries": sum(a["during"] for a in adds),
            "add_errors": len(bad_adds), "add_p50_ms": pct([a["seconds"] for a in adds], 50),
            "first_add_errors": bad_adds[:3]}


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, nargs="?", help="bundle to load (copied; adds go to the copy)")
    ap.add_argument("--tiny", action="store_true", help="use a seeded tiny test bundle (smoke check)")
    ap.add_argument("--domain", help="domain to query and add to (default: the bundle's last)")
    ap.add_argument("--clients", default="1,4,16", help="concurrency levels, comma-separated")
    ap.add_argument("--requests", type=int, default=400, help="queries per level (at most)")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="time per level (at most), each of engine/HTTP")
    ap.add_argument("--adds", type=int, default=4, help="add requests during each level's HTTP run")
    ap.add_argument("--add-batch", type=int, default=8, help="pictures per add request")
    ap.add_argument("--add-every", type=float, default=0.5, help="seconds before each add request")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--query-threads", type=int, help="the server's --query-threads (default: its own)")
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.clients.split(",")]
    if not (args.bundle or args.tiny) or min(levels) < 1 or args.requests < 1:
        ap.error("give a BUNDLE or --tiny; clients and requests must be positive")
    with tempfile.TemporaryDirectory(prefix="uem-serve-load-") as tmp:
        tmp = Path(tmp)
        if args.tiny:
            from uem.testing.bundles import make_bundle

            source = make_bundle(tmp / "tiny", n_per=8)
        else:
            source = args.bundle
        copy = tmp / "served.uem"
        shutil.copytree(source, copy)
        eng = Engine.open(source)  # Engine alone reads the original, which nobody writes
        args.domain = args.domain or eng.domains[-1]
        pictures = query_pictures(eng, args.domain, args.requests)
        new = add_pictures(eng, args.domain, args.adds * args.add_batch * len(levels))
        batches = [new[i:i + args.add_batch] for i in range(0, len(new), args.add_batch)]
        check = Consistency(eng, args.domain, batches)
        port = free_port()
        server = start_server(copy, tmp / "media", port, args.query_threads)
        results = []
        try:
            for i, n in enumerate(levels):
                results.append(level(args, n, eng, port, pictures, batches[i * args.adds:(i + 1) * args.adds], check))
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
            eng.close()
    report = {"bundle": str(source if not args.tiny else "tiny"), "domain": args.domain, "k": args.k,
              "cpus": os.cpu_count(), "levels": results, "final_count": check.max_seen[0],
              "errors": sum(r["http"]["errors"] + r["engine"]["errors"] + r["add_errors"] for r in results)}
    print(f"{'clients':>7} | {'engine req/s':>12} {'p50 ms':>7} {'p99 ms':>7} | {'HTTP req/s':>10} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | adds: during queries/all (p50 ms)", file=sys.stderr)
    for r in results:
        e, h = r["engine"], r["http"]
        print(f"{r['clients']:>7} | {fmt(e['rps'], '12.1f')} {fmt(e['p50_ms'], '7.1f')} {fmt(e['p99_ms'], '7.1f')} | "
              f"{fmt(h['rps'], '10.1f')} {fmt(h['p50_ms'], '7.1f')} {fmt(h['p99_ms'], '7.1f')} {h['errors']:>6} | "
              f"{r['adds_during_queries']}/{r['adds']} ({fmt(r['add_p50_ms'], '.0f')}){' ERRORS' if r['add_errors'] else ''}", file=sys.stderr)
        for problem in h["first_errors"] + e["first_errors"] + r["first_add_errors"]:
            print(f"        error: {problem}", file=sys.stderr)
    print(f"errors: {report['errors']}; answers seen up to {check.max_seen[0]} items in {args.domain}",
          file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
