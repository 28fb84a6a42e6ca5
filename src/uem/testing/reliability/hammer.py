"""Concurrency trial: threads querying a domain while another thread adds to it; every answer must
be exactly one committed state, and no thread may see the domain go back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundles import draw, png_bytes


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
    from uem.engine import Engine

    eng = Engine.open(bundle, threads=1)
    rng = np.random.default_rng(seed)
    base_ids = [it["id"] for it in eng.snapshot().info.domains[domain].items]
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
                    r = eng.query(vector=qvecs[j % len(qvecs)], domain=domain, k=final_k, no_reject=True)
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
